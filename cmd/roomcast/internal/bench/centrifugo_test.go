package bench

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/cfclient"
	"github.com/roomcast/roomcast/proto"
)

// TestCentrifugoConfig reads the generated config back: loopback on the
// given port, memory engine, the tool's HMAC secret for connection tokens,
// the API key, subscriptions allowed to any authenticated client, health
// on for readiness.
func TestCentrifugoConfig(t *testing.T) {
	b, err := centrifugoConfig(41234, "s3cret", "k3y")
	require.NoError(t, err)
	var c struct {
		HTTPServer struct {
			Address string `json:"address"`
			Port    int    `json:"port"`
		} `json:"http_server"`
		Engine struct{ Type string } `json:"engine"`
		Client struct {
			Token struct {
				HMAC string `json:"hmac_secret_key"`
			} `json:"token"`
		} `json:"client"`
		Channel struct {
			WithoutNamespace struct {
				AllowSubscribe bool `json:"allow_subscribe_for_client"`
			} `json:"without_namespace"`
		} `json:"channel"`
		HTTPAPI struct {
			Key string `json:"key"`
		} `json:"http_api"`
		Health struct{ Enabled bool } `json:"health"`
	}
	require.NoError(t, json.Unmarshal(b, &c))
	require.Equal(t, "127.0.0.1", c.HTTPServer.Address, "loopback only")
	require.Equal(t, 41234, c.HTTPServer.Port)
	require.Equal(t, "memory", c.Engine.Type)
	require.Equal(t, "s3cret", c.Client.Token.HMAC)
	require.True(t, c.Channel.WithoutNamespace.AllowSubscribe)
	require.Equal(t, "k3y", c.HTTPAPI.Key)
	require.True(t, c.Health.Enabled)
}

// TestCentrifugoChannel: a board's tasks and sprints rooms publish to the
// board's channel, which its members subscribe to; other rooms keep their name.
func TestCentrifugoChannel(t *testing.T) {
	for name, want := range map[string]string{
		"board-b1-tasks":   "board-b1",
		"board-b1-sprints": "board-b1",
		"board-b1":         "board-b1",
		"org-o2":           "org-o2",
		"chat-u3-x3":       "chat-u3-x3",
	} {
		r, err := proto.ParseRoom(name)
		require.NoError(t, err)
		require.Equal(t, want, centrifugoChannel(r), name)
	}
}

// TestCentrifugoPublisherCountsFailures reads /api/batch answers: a failed
// publish among good ones, an answer for the wrong number of publishes, a
// top-level error and an unreadable body are all counted and said.
func TestCentrifugoPublisherCountsFailures(t *testing.T) {
	p := &centrifugoPublisher{}
	require.NoError(t, p.check([]byte(`{"replies":[{"publish":{}},{"publish":{}}]}`), 2))
	require.Zero(t, p.failed)
	require.ErrorContains(t, p.check([]byte(`{"replies":[{"publish":{}},{"error":{"code":102,"message":"unknown channel"}}]}`), 2), "102 unknown channel")
	require.EqualValues(t, 1, p.failed)
	require.ErrorContains(t, p.check([]byte(`{"replies":[{"publish":{}}]}`), 3), "1 replies to 3 publishes")
	require.EqualValues(t, 4, p.failed)
	require.ErrorContains(t, p.check([]byte(`{"error":{"code":107,"message":"bad request"}}`), 2), "107 bad request")
	require.EqualValues(t, 6, p.failed)
	require.ErrorContains(t, p.check([]byte(`<html>`), 1), "unreadable answer")
	require.EqualValues(t, 7, p.failed)
}

func TestParsePublication(t *testing.T) {
	msg := []byte(`{"push":{"channel":"board-b1","pub":{"data":{"event":"update-task","id":"t1","diff":{"benchTs":1700000000123456789,"benchStep":3}}}}}`)
	f, ok := parsePublication(msg)
	require.True(t, ok)
	require.True(t, f.hasTS)
	require.EqualValues(t, 1700000000123456789, f.ts)
	require.EqualValues(t, 3, f.step)
	require.False(t, f.hasSeqs, "no history, no offsets")
	for _, other := range []string{
		`{"id":2,"subscribe":{}}`,
		`{"push":{"channel":"board-b1","join":{"info":{"user":"u1"}}}}`,
		`42["broadcast",{"data":{"diff":{"benchTs":1}}}]`,
	} {
		_, ok := parsePublication([]byte(other))
		require.False(t, ok, other)
	}
}

// TestPinnedCommand: with -pin a server runs under taskset on core 0, a Go
// server with GOMAXPROCS=1 after the inherited environment (so it wins);
// node is pinned alone; without -pin the command is the server itself.
func TestPinnedCommand(t *testing.T) {
	t.Setenv("GOMAXPROCS", "7")
	cmd := pinned(options{Pin: true}, true, "/bin/centrifugo", "-c", "x.json")
	require.Equal(t, []string{"taskset", "-c", "0", "/bin/centrifugo", "-c", "x.json"}, cmd.Args)
	require.Equal(t, "GOMAXPROCS=1", cmd.Env[len(cmd.Env)-1])
	cmd = pinned(options{Pin: true}, false, "node", "server.mjs")
	require.Equal(t, []string{"taskset", "-c", "0", "node", "server.mjs"}, cmd.Args)
	require.NotContains(t, cmd.Env, "GOMAXPROCS=1")
	cmd = pinned(options{}, true, "/bin/roomcast", "serve")
	require.Equal(t, []string{"/bin/roomcast", "serve"}, cmd.Args)
	require.NotContains(t, cmd.Env, "GOMAXPROCS=1")
}

// TestCentrifugoBuildReusesTheCache: a binary in the cache folder is used
// as it is, with no go tool at hand to build one.
func TestCentrifugoBuildReusesTheCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "centrifugo-"+centrifugoVersion)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "centrifugo"), []byte("#!/bin/sh\n"), 0o755))
	t.Setenv("PATH", t.TempDir())
	bin, err := buildCentrifugo(t.Context(), dir, io.Discard)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "centrifugo"), bin)
}

// TestCentrifugoBuildFailures: no go tool, and a go tool whose build fails
// (a stand-in script on PATH), each give a clear error and leave nothing
// in the cache folder for the next run to pick up.
func TestCentrifugoBuildFailures(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "centrifugo-"+centrifugoVersion)
	t.Setenv("PATH", t.TempDir())
	_, err := buildCentrifugo(t.Context(), dir, io.Discard)
	require.ErrorContains(t, err, "needs the go tool")

	bin := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bin, "go"), []byte("#!/bin/sh\necho 'go: module lookup disabled by GOPROXY=off' >&2\nexit 1\n"), 0o755))
	t.Setenv("PATH", bin)
	_, err = buildCentrifugo(t.Context(), dir, io.Discard)
	require.ErrorContains(t, err, "build Centrifugo (go install github.com/centrifugal/centrifugo/v6@v6.9.1) failed")
	require.ErrorContains(t, err, "module lookup disabled", "go's own words are in the error")
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist, "no cache folder after a failed build")
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".centrifugo-build-*"))
	require.Empty(t, left, "the build folder is removed")
}

// centrifugoOrSkip is Centrifugo built (or found in the cache). Building it
// with a cold module cache took 8 min 47 s of wall time and 201 CPU-s here
// (2 shared cores), too long for `make test`: these tests run in `make
// bench` (ROOMCAST_BENCH_CENTRIFUGO=1) and skip otherwise; they also skip,
// with go's error, when the build is impossible (no network, no go tool).
func centrifugoOrSkip(t *testing.T) {
	t.Helper()
	if os.Getenv("ROOMCAST_BENCH_CENTRIFUGO") != "1" {
		t.Skip("the Centrifugo tests build Centrifugo (about 9 minutes with a cold module cache): they run in `make bench`, or with ROOMCAST_BENCH_CENTRIFUGO=1")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("building Centrifugo is impossible here: no go tool on PATH")
	}
	if _, err := centrifugoBinary(t.Context(), options{}, io.Discard); err != nil {
		t.Skipf("building Centrifugo is impossible here: %v", err)
	}
}

// TestCentrifugoProtocol runs the tool's Centrifugo client against a real
// Centrifugo started the way the bench starts it: a bad token is refused, a
// channel in an undeclared namespace is refused, the board channel is
// subscribed, a publish through the HTTP API arrives with the timestamp the
// tool reads, and a publish to a channel Centrifugo refuses is counted failed.
func TestCentrifugoProtocol(t *testing.T) {
	centrifugoOrSkip(t)
	o := tinyOptions(t, modeFanout, "-target", "centrifugo")
	srv, err := startServer(t.Context(), o, targetCentrifugo, io.Discard)
	require.NoError(t, err)
	defer srv.close()

	bad, err := mintToken("not-the-secret", "u1", time.Hour)
	require.NoError(t, err)
	_, err = cfclient.Dial(t.Context(), cfclient.Options{URL: cfclient.URL(srv.url), Token: bad})
	require.Error(t, err, "a token signed with another secret")
	require.Contains(t, err.Error(), "invalid token")

	tok, err := mintToken(srv.secret, "u1", time.Hour)
	require.NoError(t, err)
	c, err := cfclient.Dial(t.Context(), cfclient.Options{URL: cfclient.URL(srv.url), Token: tok})
	require.NoError(t, err)
	defer c.Close()
	require.NotEmpty(t, c.Client)
	err = c.SubscribeAll([]string{"nope:x"})
	require.ErrorIs(t, err, cfclient.ErrRefused, "a namespace the config does not declare")
	require.ErrorContains(t, err, "unknown channel")
	c.Close()

	c, err = cfclient.Dial(t.Context(), cfclient.Options{URL: cfclient.URL(srv.url), Token: tok})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SubscribeAll([]string{"board-b1", "org-o1"}))

	pub := srv.newPublisher()
	room, env, err := benchEnvelope(1, 0, 7, time.Now(), "")
	require.NoError(t, err)
	require.NoError(t, pub.add(t.Context(), room, env))
	failed, err := pub.wait(t.Context())
	require.NoError(t, err)
	require.Zero(t, failed)

	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	for {
		msg, err := c.Next()
		require.NoError(t, err)
		f, ok := parsePublication(msg)
		if !ok {
			continue
		}
		require.True(t, f.hasTS, "%s", msg)
		require.EqualValues(t, 7, f.step)
		require.Contains(t, string(msg), `"channel":"board-b1"`, "board-b1-tasks is published on the board's channel")
		break
	}

	p := srv.newPublisher().(*centrifugoPublisher)
	p.batch.WriteString(`{"commands":[{"publish":{"channel":"nope:x","data":{}}}`)
	p.n = 1
	failed, err = p.wait(t.Context())
	require.ErrorContains(t, err, "unknown channel")
	require.EqualValues(t, 1, failed)
}

// TestCentrifugoModes runs tiny fan-out and storm runs through the fleet,
// with the sockets in two worker processes for the fan-out: every message
// reaches every member, every dropped socket comes back.
func TestCentrifugoModes(t *testing.T) {
	centrifugoOrSkip(t)
	o := tinyOptions(t, modeFanout, "-target", "centrifugo", "-sockets", "20", "-rooms", "4", "-rate", "20", "-duration", "1s", "-procs", "2")
	log := logTo(t)
	rs, err := run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	require.Equal(t, 20, rs[0].Connected)
	st := rs[0].Steps[0]
	require.EqualValues(t, 20, st.Published)
	require.EqualValues(t, 100, st.Expected, "20 messages to rooms of 5")
	require.Equal(t, st.Expected, st.Delivered)
	require.Positive(t, st.Latency.P50)
	require.Positive(t, st.ServerCPU)

	o = tinyOptions(t, modeStorm, "-target", "centrifugo", "-sockets", "30", "-rooms", "3", "-settle", "100ms", "-storm-deadline", "30s")
	rs, err = run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	require.Equal(t, 30.0, metricOf(t, rs[0], "back and rejoined"))
	require.True(t, strings.Contains(log.String(), "centrifugo: storm: 30/30 back"), log.String())
}

func FuzzParsePublication(f *testing.F) {
	f.Add([]byte(`{"push":{"channel":"board-b1","pub":{"data":{"diff":{"benchTs":1,"benchStep":2}}}}}`))
	f.Add([]byte(`{"push":{"channel":"x","pub":{"benchTs":99999999999999999999999`))
	f.Add([]byte(`{"push":{"channel":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, ok := parsePublication(b)
		if !ok {
			return
		}
		if fl.ts < 0 || fl.step < 0 || fl.hasSeqs {
			t.Fatalf("bad fields from %q: %+v", b, fl)
		}
	})
}
