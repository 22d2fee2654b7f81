package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"github.com/roomcast/roomcast/proto"
)

// serveCLI runs "roomcast serve ARGS…"; its error is what it printed on
// stderr when it did not exit 0.
func serveCLI(ctx context.Context, args []string) error {
	var errOut bytes.Buffer
	if code := run(ctx, append([]string{"serve"}, args...), io.Discard, &errOut); code != exitOK {
		return fmt.Errorf("exit %d: %s", code, errOut.String())
	}
	return nil
}

// A bad setting stops start-up with one clear error naming the setting,
// before anything starts.
func TestServeRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"unreadable key file", "ROOMCAST_JWT_PUBLIC_KEY", []string{"-jwt-public-key", filepath.Join(dir, "missing.pem")}},
		{"malformed NATS URL", "ROOMCAST_NATS_URL", []string{"-nats-url", "nats//nowhere"}},
		{"data dir not writable", "ROOMCAST_DATA_DIR", []string{"-data-dir", filepath.Join(file, "data")}},
		{"bad NATS address", "ROOMCAST_NATS_ADDR", []string{"-nats-addr", "4222"}},
		{"bad log level", "ROOMCAST_LOG_LEVEL", []string{"-log-level", "loud", "-data-dir", dir}},
		{"bad subject prefix", "ROOMCAST_SUBJECT_PREFIX", []string{"-subject-prefix", "a..b", "-data-dir", dir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := serveCLI(context.Background(), append(tc.args, "-http-addr", "127.0.0.1:0"))
			require.ErrorContains(t, err, tc.want)
		})
	}
	// The roomstate and sync services it runs read their own variables.
	for _, tc := range []struct{ env, value, want string }{
		{"ROOMCAST_SYNC_TAIL_MESSAGES", "many", "ROOMCAST_SYNC_TAIL_MESSAGES"},
		{"ROOMCAST_SYNC_TAIL_MESSAGES", "-2", "ROOMCAST_SYNC_*: sync: tail messages -2"},
		{"ROOMCAST_ROOMSTATE_BATCH_WAIT", "soon", "ROOMCAST_ROOMSTATE_BATCH_WAIT"},
		{"ROOMCAST_ROOMSTATE_BATCH_WAIT", "-1s", "ROOMCAST_ROOMSTATE_*: roomstate: BatchWait -1s"},
	} {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			err := serveCLI(context.Background(), []string{"-http-addr", "127.0.0.1:0", "-data-dir", dir})
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestServeConnectsInProcess: with the embedded server, the gateway,
// roomstate and sync connect to it in-process, not over loopback TCP.
func TestServeConnectsInProcess(t *testing.T) {
	started := make(chan *server.Server, 1)
	embeddedStarted = func(ns *server.Server) { started <- ns }
	t.Cleanup(func() { embeddedStarted = func(*server.Server) {} })
	dir := t.TempDir() // removed after serve stops (cleanups run last first)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveCLI(ctx, []string{"-http-addr", "127.0.0.1:0", "-nats-addr", "127.0.0.1:0",
			"-data-dir", dir, "-log-level", "error", "-jwt-secret", "0123456789abcdef0123456789abcdef"})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	var ns *server.Server
	select {
	case ns = <-started:
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
	}
	want := []string{"roomcast-gateway", "roomcast-roomstate", "roomcast-serve", "roomcast-sync"}
	require.Eventually(t, func() bool {
		cz, err := ns.Connz(&server.ConnzOptions{})
		if err != nil {
			return false
		}
		var inProcess []string
		for _, c := range cz.Conns {
			name, _, _ := strings.Cut(c.Name, " ")
			if c.Port == 0 {
				inProcess = append(inProcess, name)
			}
		}
		slices.Sort(inProcess)
		return slices.Equal(inProcess, want)
	}, 10*time.Second, 10*time.Millisecond, "every service's connection in-process")
}

// syncBuffer is serve's stdout, read by the test while serve writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe runs "roomcast serve ARGS…" on free ports until the test ends
// and returns its banner once complete.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	base := []string{"serve", "--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "warn"}
	go func() { done <- run(ctx, append(base, args...), &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		require.Equal(t, exitOK, <-done, errOut.String())
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "  nats ") || (strings.Contains(out.String(), "development mode") && !strings.Contains(out.String(), "eyJ")) {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, errOut.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "no banner: %s", out.String())
		time.Sleep(10 * time.Millisecond)
	}
	return out.String()
}

// bannerField is the value after a banner line's label ("sockets", …).
func bannerField(t *testing.T, banner, label string) string {
	t.Helper()
	for _, l := range strings.Split(banner, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == label {
			return f[1]
		}
	}
	t.Fatalf("no %q line in the banner:\n%s", label, banner)
	return ""
}

// devToken is the token line that follows "token" in a development banner.
func devToken(t *testing.T, banner string) string {
	t.Helper()
	_, after, ok := strings.Cut(banner, "  token    ")
	require.True(t, ok, banner)
	lines := strings.Split(after, "\n")
	require.GreaterOrEqual(t, len(lines), 2)
	return strings.TrimSpace(lines[1])
}

// dialOrigin opens a WebSocket to the gateway as a page from origin would.
func dialOrigin(sockets, origin string) error {
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": {origin}}), Timeout: 5 * time.Second}
	conn, _, _, err := d.Dial(context.Background(), sockets)
	if conn != nil {
		conn.Close()
	}
	return err
}

// joinBoard joins board-b1 as token's user. The banner comes as the
// gateway listens, maybe before roomstate subscribes (which a join also
// asks): until then the join is retried.
func joinBoard(t *testing.T, sockets, token string) error {
	t.Helper()
	c, err := sioclient.Dial(context.Background(), sioclient.Options{URL: sockets, Token: token})
	require.NoError(t, err)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = c.Call(string(proto.EndpointAddToRoom), proto.RoomArgs{RoomName: "board-b1"}, nil)
		if err == nil || !strings.Contains(err.Error(), proto.SubjectRoomStateGetMany) || time.Now().After(deadline) {
			return err // a failed ack too
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeDevelopmentMode: with no secret or key, serve lets joins through
// while no authorizer answers and accepts pages on localhost, and its banner
// says both with the setting that turns each off; with a configured secret
// neither, unless set explicitly; in development mode, an explicit setting
// wins.
func TestServeDevelopmentMode(t *testing.T) {
	dev := startServe(t)
	sockets := bannerField(t, dev, "sockets")
	require.Contains(t, dev, "ROOMCAST_AUTHZ_OPTIONAL=false refuses them")
	require.Contains(t, dev, "browser pages from http://localhost:* http://127.0.0.1:* may connect (ROOMCAST_ALLOWED_ORIGINS= allows none)")
	require.NoError(t, joinBoard(t, sockets, devToken(t, dev)), "a board join without an authorizer")
	require.NoError(t, dialOrigin(sockets, "http://localhost:5173"))
	require.NoError(t, dialOrigin(sockets, "http://127.0.0.1:8090"))
	require.ErrorContains(t, dialOrigin(sockets, "https://evil.example"), "403")

	secret := "0123456789abcdef0123456789abcdef"
	configured := startServe(t, "--jwt-secret", secret)
	sockets = bannerField(t, configured, "sockets")
	for _, absent := range []string{"development", "joins", "origins", "token"} {
		require.NotContains(t, configured, absent)
	}
	tok, err := signToken(secret, "u1", time.Hour)
	require.NoError(t, err)
	require.ErrorContains(t, joinBoard(t, sockets, tok), "unavailable: no service answers authz.join: cannot check access to board-b1")
	require.ErrorContains(t, dialOrigin(sockets, "http://localhost:5173"), "403")

	explicit := startServe(t, "--jwt-secret", secret, "--authz-optional", "--allowed-origins", "http://localhost:*")
	sockets = bannerField(t, explicit, "sockets")
	require.Contains(t, explicit, "ROOMCAST_AUTHZ_OPTIONAL=false refuses them")
	require.NoError(t, joinBoard(t, sockets, tok))
	require.NoError(t, dialOrigin(sockets, "http://localhost:5173"))

	t.Setenv("ROOMCAST_AUTHZ_OPTIONAL", "false")
	t.Setenv("ROOMCAST_ALLOWED_ORIGINS", "")
	strict := startServe(t)
	sockets = bannerField(t, strict, "sockets")
	require.NotContains(t, strict, "joins")
	require.NotContains(t, strict, "origins")
	require.ErrorContains(t, joinBoard(t, sockets, devToken(t, strict)), "no service answers authz.join")
	require.ErrorContains(t, dialOrigin(sockets, "http://localhost:5173"), "403")
}
