package bench

import (
	"context"
	"fmt"
	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestMain turns the test binary into a worker process when the tool
// re-executes itself (-procs > 1), as `roomcast bench worker` does.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if os.Getenv(failWorkerEnv) == "1" {
			fmt.Fprintln(os.Stderr, "worker: told to fail at start ("+failWorkerEnv+")")
			os.Exit(3)
		}
		if err := workerMain(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "roomcast-bench-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testTmp = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// failWorkerEnv makes a worker process of the test binary exit at once:
// a child of the tool that cannot start.
const failWorkerEnv = "ROOMCAST_BENCH_TEST_WORKER_FAILS"

// testTmp holds files shared by the tests (the built roomcast binary).
var testTmp string

// peerOrSkip skips when the reference peer cannot run here.
func peerOrSkip(t *testing.T) {
	t.Helper()
	dir, err := findPeerDir(options{})
	require.NoError(t, err, "bench/peer is part of the repository")
	if err := peerInstalled(dir); err != nil {
		t.Skipf("skipping the run against the Socket.IO peer: %v", err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("skipping the run against the Socket.IO peer: node is not installed")
	}
}

func tinyOptions(t *testing.T, mode string, args ...string) options {
	t.Helper()
	o, err := parseOptions(append([]string{mode, "-timeout", "60s"}, args...), os.Stderr)
	require.NoError(t, err)
	return o
}

func logTo(t *testing.T) *strings.Builder { return &strings.Builder{} }

func metricOf(t *testing.T, r result, name string) float64 {
	t.Helper()
	for _, m := range r.Metrics {
		if m.Name == name {
			return m.Value
		}
	}
	t.Fatalf("no metric %q in %+v", name, r.Metrics)
	return 0
}

// TestFanoutAgainstPeer runs a tiny fan-out against the Socket.IO peer, with
// the sockets in two worker processes: every message reaches every member of
// its room, and the figures add up.
func TestFanoutAgainstPeer(t *testing.T) {
	peerOrSkip(t)
	o := tinyOptions(t, modeFanout, "-target", "peer", "-sockets", "20", "-rooms", "4", "-rate", "20", "-duration", "1s", "-procs", "2")
	log := logTo(t)
	rs, err := run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	require.Len(t, rs, 1)
	r := rs[0]
	require.Equal(t, 20, r.Connected)
	require.Len(t, r.Steps, 1)
	s := r.Steps[0]
	require.Equal(t, uint64(20), s.Published, "1 s at 20 msg/s")
	require.Equal(t, uint64(20*5), s.Expected, "each board has 5 of the 20 sockets")
	require.Equal(t, s.Expected, s.Delivered, log.String())
	require.Equal(t, s.Delivered, s.Latency.Count)
	require.Zero(t, s.Gaps)
	require.Positive(t, s.Latency.P50)
	require.Less(t, s.Latency.Max, 5*time.Second)
	require.Positive(t, s.ServerCPU, "the peer's CPU is read from /proc")
	require.Positive(t, s.ServerRSS)
	require.Equal(t, 100.0, metricOf(t, r, "delivered"))
}

// TestRampStopsAtTheFirstStepThatFails makes every step fail by demanding a
// p99 no system has: the ramp stops after one step and says no step held.
func TestRampStopsAtTheFirstStepThatFails(t *testing.T) {
	peerOrSkip(t)
	o := tinyOptions(t, modeFanout, "-target", "peer", "-sockets", "4", "-rooms", "2", "-rate", "10", "-duration", "500ms",
		"-ramp", "-max-p99", "1ns", "-procs", "1")
	rs, err := run(t.Context(), o, logTo(t))
	require.NoError(t, err)
	require.Len(t, rs[0].Steps, 1)
	require.False(t, rs[0].Steps[0].Held)
	require.Contains(t, strings.Join(rs[0].Notes, "\n"), "no step held")
}

func TestIdleAgainstPeer(t *testing.T) {
	peerOrSkip(t)
	o := tinyOptions(t, modeIdle, "-target", "peer", "-sockets", "30", "-rooms", "3", "-settle", "200ms")
	log := logTo(t)
	rs, err := run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	require.Equal(t, 30, rs[0].Connected)
	require.Equal(t, 30.0, metricOf(t, rs[0], "sockets"))
	require.Positive(t, metricOf(t, rs[0], "server RSS with sockets"))
}

func TestStormAgainstPeer(t *testing.T) {
	peerOrSkip(t)
	o := tinyOptions(t, modeStorm, "-target", "peer", "-sockets", "30", "-rooms", "3", "-settle", "100ms", "-storm-deadline", "30s")
	log := logTo(t)
	rs, err := run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	require.Equal(t, 30.0, metricOf(t, rs[0], "sockets dropped"))
	require.Equal(t, 30.0, metricOf(t, rs[0], "back and rejoined"), log.String())
	require.Positive(t, metricOf(t, rs[0], "time until all back"))
}

// TestPeerRefusesABadToken checks the peer's handshake auth, which the
// comparison relies on being the same as roomcast's.
func TestPeerRefusesABadToken(t *testing.T) {
	peerOrSkip(t)
	o := tinyOptions(t, modeFanout, "-target", "peer")
	srv, err := startServer(t.Context(), o, targetPeer, io.Discard)
	require.NoError(t, err)
	defer srv.close()
	tok, err := mintToken("not-the-secret", "u1", time.Hour)
	require.NoError(t, err)
	_, err = sioclient.Dial(t.Context(), sioclient.Options{URL: sioclient.URL(srv.url), Token: tok})
	require.ErrorIs(t, err, sioclient.ErrRefused)
	require.ErrorContains(t, err, "bad signature")

	tok, err = mintToken(srv.secret, "u1", time.Hour)
	require.NoError(t, err)
	c, err := sioclient.Dial(t.Context(), sioclient.Options{URL: sioclient.URL(srv.url), Token: tok})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Call("addToRoom", map[string]string{"roomName": "user-u2"}, nil)
	require.ErrorContains(t, err, "forbidden", "another user's room")
	ack, err := c.Call("addToRoom", map[string]string{"roomName": "board-b1"}, nil)
	require.NoError(t, err)
	require.JSONEq(t, `{"roomName":"board-b1","lastBroadcastTimestamp":null,"seq":null}`, string(ack.Data))
}

// roomcastBinary builds the all-in-one program (ROOMCAST_BIN overrides):
// the tool starts `roomcast serve` as a process of its own, like an
// operator would, so that its CPU and RSS can be read from /proc.
func roomcastBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("ROOMCAST_BIN"); bin != "" {
		return bin
	}
	built.Do(func() {
		built.bin = filepath.Join(testTmp, "roomcast")
		cmd := exec.Command("go", "build", "-o", built.bin, "github.com/roomcast/roomcast/cmd/roomcast")
		out, err := cmd.CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build roomcast: %w\n%s", err, out)
		}
	})
	require.NoError(t, built.err)
	return built.bin
}

// built is the roomcast binary, built once for every test that needs it.
var built struct {
	sync.Once
	bin string
	err error
}

// TestFanoutAgainstRoomcast runs a small fan-out against `roomcast serve`:
// messages published to stream ROOMS reach every member of the room once,
// in order (no seq gaps), and the server's figures are read. Its CPU is
// counted in clock ticks (10 ms): 100 messages to 5 members each make
// sure there are some (20 messages once measured none).
func TestFanoutAgainstRoomcast(t *testing.T) {
	bin := roomcastBinary(t)
	o := tinyOptions(t, modeFanout, "-bin", bin, "-sockets", "20", "-rooms", "4", "-rate", "50", "-duration", "2s")
	log := logTo(t)
	rs, err := run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	s := rs[0].Steps[0]
	require.Equal(t, uint64(100*5), s.Expected)
	require.Equal(t, s.Expected, s.Delivered, log.String())
	require.Zero(t, s.Gaps)
	require.Zero(t, s.PubFailed)
	require.NotNil(t, s.NATSLeg)
	require.Equal(t, uint64(100), s.NATSLeg.Count, "every message seen once on its live subject")
	require.Positive(t, s.ServerCPU)
	require.Positive(t, s.ServerRSS)
}

// TestStormAgainstRoomcast drops a few sockets and sees them all back in
// their three rooms (org and board joins answered by the tool's authz.join
// responder).
func TestStormAgainstRoomcast(t *testing.T) {
	bin := roomcastBinary(t)
	o := tinyOptions(t, modeStorm, "-bin", bin, "-sockets", "20", "-rooms", "3", "-settle", "100ms", "-storm-deadline", "30s")
	log := logTo(t)
	rs, err := run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	require.Equal(t, 20.0, metricOf(t, rs[0], "back and rejoined"), log.String())
}

// TestStormCutAgainstRoomcast: sockets cut while broadcasts go to their
// boards come back and catch up on every one, each once and in order: with
// recovery on, every session recovered from its record and replayed what it
// missed; with it off, none, and every socket resyncs. Both runs side by
// side (-recovery both).
func TestStormCutAgainstRoomcast(t *testing.T) {
	bin := roomcastBinary(t)
	o := tinyOptions(t, modeStorm, "-bin", bin, "-sockets", "20", "-rooms", "3", "-settle", "100ms", "-storm-deadline", "30s",
		"-cut-broadcasts", "3", "-recovery", "both")
	log := logTo(t)
	rs, err := run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	require.Len(t, rs, 2)
	on, off := rs[0], rs[1]
	require.Equal(t, "recovery-on", on.Target)
	require.Equal(t, "recovery-off", off.Target)
	for _, r := range rs {
		require.Equal(t, 20.0, metricOf(t, r, "back and rejoined"), log.String())
		require.Equal(t, 3.0, metricOf(t, r, "broadcasts missed per socket"))
		require.Zero(t, metricOf(t, r, "sockets short of a missed broadcast"), log.String())
		require.Zero(t, metricOf(t, r, "broadcasts received twice"), log.String())
		require.Zero(t, metricOf(t, r, "broadcasts out of order (gaps)"), log.String())
		// /proc counts CPU in 10 ms ticks: 20 reconnects may take less
		require.GreaterOrEqual(t, metricOf(t, r, "server CPU per reconnect"), 0.0)
		require.Positive(t, metricOf(t, r, "time until all caught up"))
	}
	require.Equal(t, 20.0, metricOf(t, on, "back recovered"), log.String())
	require.Equal(t, 20.0, metricOf(t, on, "recovered with every missed broadcast"), log.String())
	require.Zero(t, metricOf(t, on, "not recovered, resynced every missed change"))
	require.Equal(t, 20.0, metricOf(t, on, "session records after the cut"), "one per socket cut")
	require.Positive(t, metricOf(t, on, "session record value"))
	require.Zero(t, metricOf(t, off, "back recovered"), log.String())
	require.Zero(t, metricOf(t, off, "session records after the cut"), "recovery off: no record")
	require.Equal(t, 20.0, metricOf(t, off, "not recovered, resynced every missed change"), log.String())
}

// TestResyncAgainstRoomcast times getChangesSince over a small stream: the
// room's changes since the cursor come back, complete.
func TestResyncAgainstRoomcast(t *testing.T) {
	bin := roomcastBinary(t)
	o := tinyOptions(t, modeResync, "-bin", bin, "-stream-msgs", "2000", "-changes", "30", "-queries", "10")
	log := logTo(t)
	rs, err := run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	// Both layouts: the changes back to back, and interleaved with other
	// rooms' messages.
	for _, layout := range []string{"back to back", "interleaved"} {
		require.Equal(t, 30.0, metricOf(t, rs[0], layout+": changes returned"), "every change since the cursor, once: "+layout)
		require.Equal(t, 1.0, metricOf(t, rs[0], layout+": complete"), layout)
	}
	require.Positive(t, metricOf(t, rs[0], "getChangesSince p99"))
	require.Positive(t, metricOf(t, rs[0], "interleaved p99"))
}

// TestPollingSocketAgainstRoomcast: a socket on Engine.IO long-polling (the
// tool's -transport polling) connects to `roomcast serve`, joins a board,
// receives the board's broadcasts and keeps answering the server's pings:
// with a 100 ms ping interval and a 300 ms timeout, a socket that missed
// its pongs would be closed long before it has answered five.
func TestPollingSocketAgainstRoomcast(t *testing.T) {
	bin := roomcastBinary(t)
	t.Setenv("ROOMCAST_PING_INTERVAL", "100ms")
	t.Setenv("ROOMCAST_PING_TIMEOUT", "300ms")
	o := tinyOptions(t, modeFanout, "-bin", bin, "-transport", "polling")
	srv, err := startServer(t.Context(), o, targetRoomcast, io.Discard)
	require.NoError(t, err)
	defer srv.close()
	tok, err := mintToken(srv.secret, "u1", time.Hour)
	require.NoError(t, err)
	bad, err := mintToken("not-the-secret", "u1", time.Hour)
	require.NoError(t, err)
	_, err = sioclient.Dial(t.Context(), sioclient.Options{URL: sioclient.PollingURL(srv.url), Token: bad, Polling: true})
	require.ErrorIs(t, err, sioclient.ErrRefused, "the CONNECT refused over polling")
	_, err = sioclient.Dial(t.Context(), sioclient.Options{URL: strings.Replace(sioclient.PollingURL(srv.url), "EIO=4", "EIO=3", 1), Token: tok, Polling: true})
	require.ErrorContains(t, err, "HTTP 400", "an open the server answers with an error")

	c, err := sioclient.Dial(t.Context(), sioclient.Options{URL: sioclient.PollingURL(srv.url), Token: tok, Polling: true})
	require.NoError(t, err)
	defer c.Close()
	require.NotEmpty(t, c.SID)
	ack, err := c.Call("addToRoom", map[string]string{"roomName": "board-b0"}, nil)
	require.NoError(t, err)
	require.Contains(t, string(ack.Data), `"roomName":"board-b0"`)

	pub := srv.newPublisher()
	deadline := time.Now().Add(20 * time.Second)
	for seq := uint64(0); c.Pings < 5; seq++ {
		require.True(t, time.Now().Before(deadline), "pings answered: %d", c.Pings)
		room, env, err := benchEnvelope(0, seq, 1, time.Now(), "")
		require.NoError(t, err)
		require.NoError(t, pub.add(t.Context(), room, env))
		require.NoError(t, pub.flush(t.Context()))
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		msg, err := c.Next()
		require.NoError(t, err, "after %d pings", c.Pings)
		f, ok := parseBroadcast(msg)
		require.True(t, ok, "%.100q", msg)
		require.True(t, f.hasTS)
		require.Equal(t, int64(1), f.step)
	}
	failed, err := pub.wait(t.Context())
	require.NoError(t, err)
	require.Zero(t, failed)
}

// TestPollingTransportIsCheckedAtParse: a wrong -transport, or polling
// where the tool has no polling client, is refused before anything starts.
func TestPollingTransportIsCheckedAtParse(t *testing.T) {
	for _, args := range [][]string{
		{"fanout", "-transport", "sse"},
		{"storm", "-transport", "polling"},
		{"fanout", "-transport", "polling", "-target", "centrifugo"},
		{"fanout", "-transport", "polling", "-deflate"},
	} {
		_, err := parseOptions(args, io.Discard)
		require.ErrorContains(t, err, "-transport", "%v", args)
	}
	o, err := parseOptions([]string{"idle", "-transport", "polling", "-target", "socketio"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, transportPolling, o.Transport)
	require.Equal(t, "idle over long-polling", o.heading())
	o, err = parseOptions([]string{"fanout", "-deflate"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "fanout with permessage-deflate", o.heading())
}

// TestDeflateFanoutAgainstRoomcast: with -deflate the sockets negotiate
// permessage-deflate with roomcast's gateway, every message still arrives
// whole and in order (inflated: the tool reads its timestamp and seqs), and
// the bytes read per delivery fall well below the plain run's.
func TestDeflateFanoutAgainstRoomcast(t *testing.T) {
	bin := roomcastBinary(t)
	perDelivery := map[bool]float64{}
	for _, deflate := range []bool{false, true} {
		args := []string{"-bin", bin, "-sockets", "10", "-rooms", "2", "-rate", "20", "-duration", "500ms", "-pad", "1000", "-procs", "1"}
		if deflate {
			args = append(args, "-deflate")
		}
		o := tinyOptions(t, modeFanout, args...)
		log := logTo(t)
		rs, err := run(t.Context(), o, log)
		require.NoError(t, err, log.String())
		s := rs[0].Steps[0]
		require.Equal(t, s.Expected, s.Delivered, log.String())
		require.Zero(t, s.Gaps)
		perDelivery[deflate] = metricOf(t, rs[0], "bytes per delivery")
	}
	require.Greater(t, perDelivery[false], 1000.0, "a padded broadcast is over 1 KB plain")
	require.Less(t, perDelivery[true], 0.7*perDelivery[false], "compressed: %v", perDelivery)
}

func TestPadTextCompressesLikeText(t *testing.T) {
	p := padText(1000)
	require.Len(t, p, 1000)
	require.Equal(t, p, padText(1000), "the same text every time")
	require.Greater(t, len(strings.Fields(p)), 100)
}
