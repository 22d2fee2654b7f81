package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
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
	"github.com/nats-io/nats.go"
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
// serveEmbedded runs `roomcast serve` with args until the test ends (its
// error then must be nil) and returns its embedded nats-server once it has
// started; serve stopping before that fails the test.
func serveEmbedded(t *testing.T, args ...string) *server.Server {
	t.Helper()
	started := make(chan *server.Server, 1)
	embeddedStarted = func(ns *server.Server) { started <- ns }
	t.Cleanup(func() { embeddedStarted = func(*server.Server) {} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveCLI(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	select {
	case ns := <-started:
		return ns
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
		return nil
	}
}

func TestServeConnectsInProcess(t *testing.T) {
	dir := t.TempDir() // removed after serve stops (cleanups run last first)
	ns := serveEmbedded(t, "-http-addr", "127.0.0.1:0", "-nats-addr", "127.0.0.1:0",
		"-data-dir", dir, "-log-level", "error", "-jwt-secret", "0123456789abcdef0123456789abcdef")
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

	// The development default: on loopback, no credentials needed.
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	nc.Close()
}

// The embedded NATS has no authorization unless given a config with some,
// so it listens on loopback only: any other address is refused before
// anything starts, with the setting that would allow it.
func TestServeEmbeddedNATSRefusesOtherAddressesWithoutAuthorization(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.conf")
	require.NoError(t, os.WriteFile(open, []byte("host: 0.0.0.0\nport: -1\njetstream { store_dir: \""+filepath.Join(dir, "js")+"\" }\n"), 0o644))
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"all IPv4 addresses", "ROOMCAST_NATS_CONFIG", []string{"-nats-addr", "0.0.0.0:0"}},
		{"all IPv6 addresses", "ROOMCAST_NATS_CONFIG", []string{"-nats-addr", "[::]:0"}},
		{"a host name", "listens on loopback only", []string{"-nats-addr", "nats.example.com:4222"}},
		{"a config without authorization", "no authorization", []string{"-nats-config", open}},
		{"a config that does not parse", "ROOMCAST_NATS_CONFIG", []string{"-nats-config", filepath.Join(dir, "missing.conf")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := serveCLI(context.Background(), append(tc.args, "-http-addr", "127.0.0.1:0", "-data-dir", dir))
			require.ErrorContains(t, err, tc.want)
			_, statErr := os.Stat(filepath.Join(dir, "jetstream"))
			require.True(t, os.IsNotExist(statErr), "nothing was started")
		})
	}
}

// With ROOMCAST_NATS_CONFIG (the deploy roles), the embedded NATS listens
// where the file says and lets in only the roles; serve's own services
// connect as theirs (gateway, roomstate, sync; admin ensures the stream).
func TestServeEmbeddedNATSWithConfig(t *testing.T) {
	dir := t.TempDir()
	accounts, err := os.ReadFile("../../deploy/nats/accounts.conf")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "accounts.conf"), accounts, 0o644))
	conf := filepath.Join(dir, "nats.conf")
	require.NoError(t, os.WriteFile(conf, []byte("host: 0.0.0.0\nport: -1\njetstream { store_dir: \""+
		filepath.Join(dir, "js")+"\" }\ninclude accounts.conf\n"), 0o644))

	// The roles' passwords are needed before anything starts: nats-server
	// reads them for the config, serve for its connections.
	err = serveCLI(context.Background(), []string{"-http-addr", "127.0.0.1:0", "-nats-config", conf})
	require.ErrorContains(t, err, "ROOMCAST_ADMIN_PASSWORD")
	literal := filepath.Join(dir, "literal.conf")
	require.NoError(t, os.WriteFile(literal, []byte("port: -1\njetstream: enabled\nauthorization { user: admin, password: a }\n"), 0o644))
	err = serveCLI(context.Background(), []string{"-http-addr", "127.0.0.1:0", "-nats-config", literal, "-data-dir", dir})
	require.ErrorContains(t, err, "needs ROOMCAST_ADMIN_PASSWORD, ROOMCAST_GATEWAY_PASSWORD, ROOMCAST_ROOMSTATE_PASSWORD, ROOMCAST_SYNC_PASSWORD")

	setPasswords(t)
	ns := serveEmbedded(t, "-http-addr", "127.0.0.1:0", "-nats-config", conf,
		"-log-level", "error", "-jwt-secret", "0123456789abcdef0123456789abcdef")
	require.True(t, ns.Addr().(*net.TCPAddr).IP.IsUnspecified(), "listens where the file says, every address")
	url := fmt.Sprintf("nats://127.0.0.1:%d", ns.Addr().(*net.TCPAddr).Port)

	_, err = nats.Connect(url)
	require.ErrorContains(t, err, "Authorization Violation", "no credentials, no entry")

	want := []string{"admin", "gateway", "roomstate", "sync"}
	require.Eventually(t, func() bool {
		cz, err := ns.Connz(&server.ConnzOptions{Username: true})
		if err != nil {
			return false
		}
		var users []string
		for _, c := range cz.Conns {
			users = append(users, c.AuthorizedUser)
		}
		slices.Sort(users)
		return slices.Equal(users, want)
	}, 10*time.Second, 10*time.Millisecond, "each service as its role")

	// roomstate, as its role, answers.
	admin, err := nats.Connect(url, nats.UserInfo("admin", "pw-admin"))
	require.NoError(t, err)
	defer admin.Close()
	require.Eventually(t, func() bool {
		var st *proto.RoomState
		rctx, c := context.WithTimeout(t.Context(), time.Second)
		defer c()
		return proto.Request(rctx, admin, proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: "board-b1"}, &st) == nil
	}, 10*time.Second, 50*time.Millisecond)
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
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ; !strings.Contains(out.String(), "  nats ") || (strings.Contains(out.String(), "development mode") && !strings.Contains(out.String(), "eyJ")); <-tick.C {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, errOut.String())
		default:
		}
		require.True(t, time.Now().Before(deadline), "no banner: %s", out.String())
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
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		_, err = c.Call(string(proto.EndpointAddToRoom), proto.RoomArgs{RoomName: "board-b1"}, nil)
		if err == nil || !strings.Contains(err.Error(), proto.SubjectRoomStateGetMany) || time.Now().After(deadline) {
			return err // a failed ack too
		}
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

// TestHostsGateway: the command lines whose process hosts a gateway, and
// so starts again with sysmon kept awake (flagenv.KeepSysmonAwake), and
// no other.
func TestHostsGateway(t *testing.T) {
	for _, args := range [][]string{{"serve"}, {"serve", "--log-level", "warn"}, {"bench", "fleet-gateway"}} {
		require.True(t, hostsGateway(args), "%q", args)
	}
	for _, args := range [][]string{nil, {"bench"}, {"bench", "fanout"}, {"bench", "fleet-roomstate"}, {"publish", "serve"}, {"--help"}} {
		require.False(t, hostsGateway(args), "%q", args)
	}
}
