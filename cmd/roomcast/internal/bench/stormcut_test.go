package bench

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"github.com/roomcast/roomcast/proto"
)

// scriptedSocketIO is a Socket.IO server on a real WebSocket that opens the
// session, answers the CONNECT with reply, then writes each of then after
// reading one client packet (nothing for ""); it returns the address to
// dial and the packets it read after the CONNECT.
func scriptedSocketIO(t *testing.T, reply string, then ...string) (string, <-chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	read := make(chan string, len(then))
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := ws.Upgrade(conn); err != nil {
			return
		}
		write := func(m string) { _ = wsutil.WriteServerMessage(conn, ws.OpText, []byte(m)) }
		write(`0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`)
		if _, err := wsutil.ReadClientText(conn); err != nil { // the CONNECT
			return
		}
		write(reply)
		for _, m := range then {
			b, err := wsutil.ReadClientText(conn)
			if err != nil {
				return
			}
			read <- string(b)
			for _, frame := range splitFrames(m) {
				write(frame)
			}
		}
		_, _ = wsutil.ReadClientText(conn) // until the client goes
	}()
	return "http://" + l.Addr().String(), read
}

// splitFrames splits a script line into frames on "\n".
func splitFrames(m string) []string {
	var out []string
	start := 0
	for i := 0; i < len(m); i++ {
		if m[i] == '\n' {
			out = append(out, m[start:i])
			start = i + 1
		}
	}
	return append(out, m[start:])
}

func testWorker() *worker {
	w := &worker{cfg: workerConfig{Rooms: 3}, changed: make(chan struct{})}
	w.hist.Store(NewHistogram())
	w.step.Store(stepCut)
	return w
}

// TestResyncCountsWhatItReturns: a socket not recovered resyncs its
// board's tasks room after its last seq; the changes returned, and a
// broadcast that arrived during the call, count as received.
func TestResyncCountsWhatItReturns(t *testing.T) {
	url, read := scriptedSocketIO(t, `40{"sid":"s1"}`,
		`42["broadcast",{"destination":"board-b1-tasks","data":{"diff":{"benchTs":1,"benchStep":2}},"seq":12,"prevSeq":11}]`+"\n"+
			`430[{"ok":true,"data":{"changes":[{"id":"a","seq":11},{"id":"b","seq":12}],"complete":true}}]`)
	c, err := sioclient.Dial(t.Context(), sioclient.Options{URL: sioclient.URL(url), Token: "t"})
	require.NoError(t, err)
	defer c.Close()
	w := testWorker()
	s := &benchSocket{i: 4, lastSeq: 10, want: 3}
	w.resync(c, s)
	require.Equal(t, `420["endpoint",{"endpointName":"getChangesSince","endpointArgs":{"roomName":"board-b1-tasks","afterSeq":10}}]`, <-read)
	require.Equal(t, 2, s.missedGot, "the broadcast that came during the call, and the change it was not")
	require.Equal(t, int64(12), s.lastSeq)
	require.Zero(t, w.completeResync, "one missing")
	require.Zero(t, w.resyncFailures)

	// with the third change: caught up by resync, once
	url, _ = scriptedSocketIO(t, `40{"sid":"s2"}`,
		`430[{"ok":true,"data":{"changes":[{"id":"a","seq":11},{"id":"b","seq":12},{"id":"c","seq":13}],"complete":true}}]`)
	c2, err := sioclient.Dial(t.Context(), sioclient.Options{URL: sioclient.URL(url), Token: "t"})
	require.NoError(t, err)
	defer c2.Close()
	s.lastSeq, s.missedGot = 10, 0
	w.resync(c2, s)
	require.Equal(t, 3, s.missedGot)
	require.Equal(t, 1, w.completeResync)
	require.Zero(t, w.completeRecovered)
	require.Zero(t, w.resyncFailures)
}

// TestResyncRetriesWhenRateLimited: a resync refused rate_limited is asked
// again after the gateway's retryAfterMs, as the client library does, and
// the retry is counted.
func TestResyncRetriesWhenRateLimited(t *testing.T) {
	url, read := scriptedSocketIO(t, `40{"sid":"s1"}`,
		`430[{"ok":false,"error":{"code":"rate_limited","message":"too many history reads in flight","retryAfterMs":300}}]`,
		`431[{"ok":true,"data":{"changes":[{"id":"a","seq":11}],"complete":true}}]`)
	c, err := sioclient.Dial(t.Context(), sioclient.Options{URL: sioclient.URL(url), Token: "t"})
	require.NoError(t, err)
	defer c.Close()
	w := testWorker()
	s := &benchSocket{i: 4, lastSeq: 10, want: 1}
	start := time.Now()
	w.resync(c, s)
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "not before retryAfterMs")
	<-read
	require.Contains(t, <-read, `421["endpoint",{"endpointName":"getChangesSince","endpointArgs":{"roomName":"board-b1-tasks","afterSeq":10}}]`)
	require.Equal(t, uint64(1), w.resyncRetries.Load())
	require.Equal(t, 1, w.completeResync)
	require.Zero(t, w.resyncFailures)
}

func TestResyncBackoff(t *testing.T) {
	for n := 1; n <= 8; n++ {
		step := min(5*time.Second, 500*time.Millisecond<<(n-1))
		d := resyncBackoff(n, 0)
		require.GreaterOrEqual(t, d, step/2, "n=%d", n)
		require.LessOrEqual(t, d, step, "n=%d", n)
	}
	require.Equal(t, 7*time.Second, resyncBackoff(1, 7*time.Second), "never before retryAfterMs")
}

// TestResyncFailureIsCounted: a resync the server refuses counts as a
// failure, with its error kept for the report.
func TestResyncFailureIsCounted(t *testing.T) {
	url, _ := scriptedSocketIO(t, `40{"sid":"s1"}`, `430[{"ok":false,"error":{"code":"unavailable","message":"sync is away"}}]`)
	c, err := sioclient.Dial(t.Context(), sioclient.Options{URL: sioclient.URL(url), Token: "t"})
	require.NoError(t, err)
	defer c.Close()
	w := testWorker()
	s := &benchSocket{i: 4, lastSeq: 10, want: 3}
	w.resync(c, s)
	require.Equal(t, 1, w.resyncFailures)
	require.Zero(t, w.completeResync)
	require.ErrorContains(t, w.firstErr, "socket 4: resync: unavailable: sync is away")
}

// TestRecordCountsMissedOnceAndDuplicates: a socket back from a cut
// completes when it has every broadcast it missed; one seen twice is
// counted as such, not as received.
func TestRecordCountsMissedOnceAndDuplicates(t *testing.T) {
	w := testWorker()
	s := &benchSocket{lastSeq: 10, want: 3, recovered: true}
	bc := func(seq, prev int64, step int64) broadcastFields {
		return broadcastFields{ts: 1, hasTS: true, step: step, seq: seq, prevSeq: prev, hasSeqs: true}
	}
	w.record(s, bc(11, 10, stepCut))
	w.record(s, bc(11, 10, stepCut))
	require.Equal(t, 1, s.missedGot)
	require.Equal(t, uint64(1), w.duplicates.Load())
	w.record(s, bc(13, 12, stepCut)) // 12 never came
	require.Equal(t, uint64(1), w.gaps.Load())
	w.record(s, bc(14, 13, stepWarm)) // another step's: not one it missed
	require.Equal(t, 2, s.missedGot)
	require.Zero(t, w.completeRecovered)
	w.record(s, bc(15, 14, stepCut))
	require.Equal(t, 1, w.completeRecovered)
	w.record(s, bc(16, 15, stepCut)) // more than it missed: counted once
	require.Equal(t, 1, w.completeRecovered)
	require.False(t, w.caughtUp.IsZero())
}

// TestTallyMetrics: the workers' tallies add up, and sockets short of a
// broadcast are named in a note.
func TestTallyMetrics(t *testing.T) {
	c := &stormCut{}
	ms := c.tally([]workerEvent{
		{Rejoined: 10, Recovered: 10, CompleteRecovered: 9},
		{Rejoined: 10, CompleteResync: 9, ResyncFailures: 1, Duplicates: 2, Error: "socket 3: resync: unavailable: sync timed out"},
	}, time.Now(), 3)
	got := map[string]float64{}
	for _, m := range ms {
		got[m.Name] = m.Value
	}
	require.Equal(t, 9.0, got["recovered with every missed broadcast"])
	require.Equal(t, 9.0, got["not recovered, resynced every missed change"])
	require.Equal(t, 2.0, got["sockets short of a missed broadcast"])
	require.Equal(t, 2.0, got["broadcasts received twice"])
	require.Equal(t, []string{"2 of 20 sockets back did not get every one of the 3 broadcasts they missed (1 resyncs failed)",
		"first failure: socket 3: resync: unavailable: sync timed out"}, c.notes)
}

// TestSessionRecords: the records in KV SESSIONS are counted and measured
// (value, key, stream bytes, disk); without the bucket, the same metrics
// are zero and a note says why.
func TestSessionRecords(t *testing.T) {
	dir := t.TempDir()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true})
	require.NoError(t, err)
	ns.Start()
	t.Cleanup(ns.Shutdown)
	require.True(t, ns.ReadyForConnections(10*time.Second))
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	srv := &server{name: targetRoomcast, js: js, dataDir: dir}
	values := func(ms []metric) map[string]float64 {
		out := map[string]float64{}
		for _, m := range ms {
			out[m.Name] = m.Value
		}
		return out
	}

	ms, notes := sessionRecords(t.Context(), srv, 3, time.Second, io.Discard)
	require.Equal(t, []string{"no SESSIONS bucket: the server keeps no sessions"}, notes)
	require.Zero(t, values(ms)["session records after the cut"])
	require.Len(t, ms, 6, "the same metrics as with records, for -recovery both")

	kv, err := js.CreateKeyValue(t.Context(), proto.StoreConfig{}.SessionsBucket())
	require.NoError(t, err)
	for _, pid := range []string{"pid-0000000001", "pid-0000000002", "pid-0000000003"} {
		_, err := kv.Put(t.Context(), pid, []byte(`{"user":"u1","rooms":[{"n":"board-b1","l":12}]}`))
		require.NoError(t, err)
	}
	ms, notes = sessionRecords(t.Context(), srv, 3, 5*time.Second, io.Discard)
	require.Empty(t, notes)
	got := values(ms)
	require.Equal(t, 3.0, got["session records after the cut"])
	require.Equal(t, 47.0, got["session record value"])
	require.Equal(t, 14.0, got["session record key (pid)"])
	require.Greater(t, got["SESSIONS stream bytes per record"], 47.0+14.0, "the value, its subject and the message's overhead")
	require.Positive(t, got["SESSIONS on disk"])

	// fewer records than sockets cut: waited for a while, then said
	ms, notes = sessionRecords(t.Context(), srv, 5, 1500*time.Millisecond, io.Discard)
	require.Equal(t, 3.0, values(ms)["session records after the cut"])
	require.Equal(t, []string{"3 session records for 5 sockets cut"}, notes)
}
