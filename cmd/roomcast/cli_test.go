package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/roomstate"
	"github.com/roomcast/roomcast/services/sync/backfill"
)

type cli struct {
	t   *testing.T
	url string
}

// run runs one roomcast command against the test's NATS and returns its
// exit code, stdout and stderr.
func (c cli) run(args ...string) (int, string, string) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := append([]string{args[0], "-nats-url", c.url, "-timeout", "3s"}, args[1:]...)
	code := run(ctx, full, &out, &errOut)
	return code, out.String(), errOut.String()
}

func (c cli) ok(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(args...)
	require.Equal(c.t, exitOK, code, "roomcast %v: %s", args, errOut)
	return out
}

func lines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var res []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		res = append(res, m)
	}
	return res
}

func TestCLIPublishAndReplay(t *testing.T) {
	s, nc, js := natstest.RunStack(t, proto.StoreConfig{})
	c := cli{t, s.ClientURL()}

	out := c.ok("publish", "-data", `{"title":"a"}`, "-updated-at", "1000", "-msg-id", "m1", "board-b1-tasks", "create-task", "t1")
	require.Equal(t, map[string]any{"room": "board-b1-tasks", "seq": 1.0, "duplicate": false}, lines(t, out)[0])
	out = c.ok("publish", "-data", `{"title":"a"}`, "-updated-at", "1000", "-msg-id", "m1", "board-b1-tasks", "create-task", "t1")
	require.Equal(t, true, lines(t, out)[0]["duplicate"], "a retried publish is stored once")
	c.ok("publish", "-diff", `{"title":"b"}`, "-updated-at", "2000", "board-b1-tasks", "update-task", "t1")
	c.ok("publish", "-updated-at", "3000", "board-b1-tasks", "delete-task", "t1")
	c.ok("publish", "-data", `{"title":"x"}`, "board-b2-tasks", "create-task", "t9")

	for _, bad := range [][]string{
		{"publish", "board-b1", "delete-task", "t1"},                     // wrong room kind
		{"publish", "board-*-tasks", "delete-task", "t1"},                // bad room
		{"publish", "-diff", "{", "board-b1-tasks", "update-task", "t1"}, // bad JSON
		{"publish", "board-b1-tasks", "rename-task", "t1"},               // unknown event
		{"publish", "board-b1-tasks", "create-task"},                     // missing id
	} {
		code, _, errOut := c.run(bad...)
		require.Equal(t, exitUsage, code, "%v", bad)
		require.NotEmpty(t, errOut)
	}
	stream, err := js.Stream(context.Background(), proto.StreamRooms)
	require.NoError(t, err)
	info, err := stream.Info(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 4, info.State.Msgs, "refused publishes stored nothing")

	// Replay a range of one room, printed as JSON lines.
	got := lines(t, c.ok("replay", "-from-seq", "1", "-to-seq", "2", "-quiet", "board-b1-tasks"))
	require.Len(t, got, 2)
	require.Equal(t, 1.0, got[0]["seq"])
	require.Equal(t, "m1", got[0]["msgId"])
	require.Equal(t, "update-task", got[1]["data"].(map[string]any)["event"])
	all := lines(t, c.ok("replay", "-since", "0", "-quiet", "board-b1-tasks"))
	require.Len(t, all, 3, "-since 0: the room's whole history, and only that room's")

	// Replay into another room: stored there, once however often it runs.
	c.ok("replay", "-from-seq", "1", "-to-room", "board-b3-tasks", "-quiet", "board-b1-tasks")
	c.ok("replay", "-from-seq", "1", "-to-room", "board-b3-tasks", "-quiet", "board-b1-tasks")
	require.Len(t, lines(t, c.ok("replay", "-from-seq", "1", "-quiet", "board-b3-tasks")), 3)
	code, _, errOut := c.run("replay", "-from-seq", "1", "-to-room", "board-b3", "-quiet", "board-b1-tasks")
	require.Equal(t, exitFailure, code)
	require.Contains(t, errOut, "create-task events go to", "task events do not go to a board room")

	// Rebroadcast: live subject, original sequences, not stored again.
	live := make(chan *nats.Msg, 10)
	sub, err := nc.ChanSubscribe("live.>", live)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, nc.Flush())
	c.ok("replay", "-from-seq", "2", "-rebroadcast", "-quiet", "board-b1-tasks")
	for _, want := range []string{"2", "3"} {
		select {
		case m := <-live:
			require.Equal(t, "live.rooms.board.b1.tasks", m.Subject)
			require.Equal(t, want, m.Header.Get("Nats-Sequence"))
		case <-time.After(3 * time.Second):
			t.Fatalf("rebroadcast of seq %s not seen", want)
		}
	}
	info, err = stream.Info(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 7, info.State.Msgs, "a rebroadcast stores nothing")

	for _, bad := range [][]string{
		{"replay", "board-b1-tasks"},
		{"replay", "-since", "0", "-from-seq", "1", "board-b1-tasks"},
		{"replay", "-since", "0", "-to-room", "board-b3-tasks", "-rebroadcast", "board-b1-tasks"},
		{"replay", "-since", "0", "client-c1"},
	} {
		code, _, _ := c.run(bad...)
		require.Equal(t, exitUsage, code, "%v", bad)
	}
}

func TestCLITail(t *testing.T) {
	s, _, _ := natstest.RunStack(t, proto.StoreConfig{})
	c := cli{t, s.ClientURL()}
	done := make(chan string, 1)
	go func() { done <- c.ok("tail", "-count", "2", "board-b1-tasks") }()
	// tail subscribes before it reports on stderr; publish until it has seen two.
	deadline := time.After(10 * time.Second)
	for i := 1; ; i++ {
		c.ok("publish", "-updated-at", strconv.Itoa(i), "board-b1-tasks", "delete-task", "t"+strconv.Itoa(i))
		select {
		case out := <-done:
			got := lines(t, out)
			require.Len(t, got, 2)
			require.Equal(t, "board-b1-tasks", got[0]["destination"])
			require.Equal(t, got[0]["seq"], got[1]["prevSeq"], "sequences chain")
			return
		case <-deadline:
			t.Fatal("tail did not print two broadcasts")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestCLIRevokeCreatesTheBucket: roomcast revoke records the revoke even
// where no program has created REVOCATIONS yet (and no gateway is running
// to hear the message): it creates the bucket, with the configured
// lifetime.
func TestCLIRevokeCreatesTheBucket(t *testing.T) {
	s := natstest.RunServer(t)
	c := cli{t, s.ClientURL()}
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(c.ok("revoke", "--max-token-lifetime", "2h", "u9")), &got))
	require.Equal(t, "u9", got["revoked"])
	nc := natstest.Connect(t, s)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(t.Context(), proto.BucketRevocations)
	require.NoError(t, err)
	st, err := kv.Status(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, st.TTL())
	e, err := kv.Get(t.Context(), "u9")
	require.NoError(t, err)
	r, ok := proto.ParseRevocation(e.Value())
	require.True(t, ok)
	require.EqualValues(t, got["revokedAt"], r.RevokedAt)
}

// TestCLITailClientRoom: a client room is tailed as one user's tab: its
// subject names the user, so --user is required, and only for client rooms.
func TestCLITailClientRoom(t *testing.T) {
	s, nc, _ := natstest.RunStack(t, proto.StoreConfig{})
	c := cli{t, s.ClientURL()}
	for _, args := range [][]string{{"tail", "client-tab1"}, {"tail", "--user", "alice", "board-b1"}, {"tail", "--user", "a.b", "client-tab1"}} {
		code, _, _ := c.run(args...)
		require.Equal(t, exitUsage, code, args)
	}
	done := make(chan string, 1)
	go func() { done <- c.ok("tail", "--count", "1", "--user", "alice", "client-tab1") }()
	bob, _ := proto.ClientRoom("bob", "tab1")
	alice, _ := proto.ClientRoom("alice", "tab1")
	deadline := time.After(10 * time.Second)
	for {
		require.NoError(t, nc.Publish(proto.Subjects{}.Publish(bob), []byte(`{"for":"bob"}`)))
		require.NoError(t, nc.Publish(proto.Subjects{}.Publish(alice), []byte(`{"for":"alice"}`)))
		select {
		case out := <-done:
			got := lines(t, out)
			require.Len(t, got, 1)
			require.Equal(t, "client-tab1", got[0]["destination"])
			require.Equal(t, map[string]any{"for": "alice"}, got[0]["data"])
			return
		case <-deadline:
			t.Fatal("tail did not print alice's tab's message")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestCLIServicesAndControl(t *testing.T) {
	s, nc, js := natstest.RunStack(t, proto.StoreConfig{})
	c := cli{t, s.ClientURL()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, runSvc := range []func() error{
		func() error {
			return roomstate.Run(ctx, roomstate.Config{NATSURL: s.ClientURL(), Logger: zerolog.Nop(), Registry: prometheus.NewRegistry()})
		},
		func() error {
			return backfill.Run(ctx, backfill.Config{NATSURL: s.ClientURL(), Logger: zerolog.Nop(), Registry: prometheus.NewRegistry()})
		},
	} {
		go runSvc()
	}

	c.ok("publish", "-data", `{"title":"a"}`, "-updated-at", "1000", "board-b1-tasks", "create-task", "t1")
	c.ok("publish", "-updated-at", "2000", "board-b1-tasks", "delete-task", "t2")
	require.Eventually(t, func() bool {
		code, out, _ := c.run("state", "board-b1-tasks")
		return code == exitOK && strings.TrimSpace(out) == `{"lastBroadcastTimestamp":2000,"seq":2}`
	}, 10*time.Second, 50*time.Millisecond, "state from roomstate.get")

	var changes proto.ChangesResult
	require.Eventually(t, func() bool {
		code, out, _ := c.run("changes", "-after-seq", "0", "board-b1-tasks")
		return code == exitOK && json.Unmarshal([]byte(out), &changes) == nil
	}, 10*time.Second, 50*time.Millisecond, "changes from sync.changes")
	require.Len(t, changes.Changes, 2)
	require.True(t, changes.Complete)
	code, _, _ := c.run("changes", "board-b1-tasks")
	require.Equal(t, exitUsage, code, "no cursor")

	msgs := make(chan *nats.Msg, 4)
	sub, err := nc.ChanSubscribe("ctl.>", msgs)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, nc.Flush())
	c.ok("revoke", "u1")
	c.ok("kick", "board-b1", "u2")
	m := <-msgs
	require.Equal(t, proto.RevokeSubject("u1"), m.Subject)
	// The revoke is recorded in REVOCATIONS with the time the message carries.
	sent, ok := proto.ParseRevocation(m.Data)
	require.True(t, ok, string(m.Data))
	kv, err := js.KeyValue(t.Context(), proto.BucketRevocations)
	require.NoError(t, err)
	e, err := kv.Get(t.Context(), "u1")
	require.NoError(t, err)
	stored, ok := proto.ParseRevocation(e.Value())
	require.True(t, ok)
	require.Equal(t, sent, stored)
	m = <-msgs
	require.Equal(t, proto.SubjectKick, m.Subject)
	require.JSONEq(t, `{"roomName":"board-b1","userId":"u2"}`, string(m.Data))
	code, _, _ = c.run("revoke", "u*")
	require.Equal(t, exitUsage, code)

	info := lines(t, c.ok("streams", "info"))[0]
	require.Equal(t, "ROOMS", info["stream"].(map[string]any)["name"])
	require.NotEmpty(t, info["stream"].(map[string]any)["leader"], "the server that leads the stream")
	require.Contains(t, info["buckets"], proto.BucketRoomState)
	require.Contains(t, info["buckets"], proto.BucketRevocations)
	c.ok("streams", "ensure")
}

func TestCLIExitCodes(t *testing.T) {
	var out, errOut bytes.Buffer
	require.Equal(t, exitUsage, run(context.Background(), []string{"frobnicate"}, &out, &errOut))
	require.Equal(t, exitUsage, run(context.Background(), nil, &out, &errOut))
	require.Equal(t, exitOK, run(context.Background(), []string{"help"}, &out, &errOut))
	// Nothing listens here: a failure, not a usage error.
	c := cli{t, "nats://127.0.0.1:1"}
	code, _, errOut2 := c.run("state", "board-b1")
	require.Equal(t, exitFailure, code)
	require.Contains(t, errOut2, "connect to NATS")
}

// TestCLICommandLine: flags anywhere in either spelling, help that exits 0
// and lists only the command's flags, usage errors in one line and a hint,
// shell completion.
func TestCLICommandLine(t *testing.T) {
	s, _, _ := natstest.RunStack(t, proto.StoreConfig{})
	c := cli{t, s.ClientURL()}
	for _, args := range [][]string{
		{"publish", "board-b1-tasks", "update-task", "t1", "-diff", `{"title":"New"}`},
		{"publish", "board-b1-tasks", "--diff", `{"title":"New"}`, "update-task", "t1"},
		{"publish", "board-b1-tasks", "update-task", "t1", "--diff={\"title\":\"New\"}", "--updated-at", "5"},
	} {
		require.Equal(t, "board-b1-tasks", lines(t, c.ok(args...))[0]["room"], "%v", args)
	}

	help := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		require.Equal(t, exitOK, run(context.Background(), args, &out, &errOut), "%v: %s", args, errOut.String())
		return out.String()
	}
	state := help("state", "-h")
	require.Contains(t, state, "--nats-url")
	require.Contains(t, state, "roomcast state board-b1-tasks", "an example")
	for _, unused := range []string{"--since", "--subject-prefix", "--replicas", "--max-age", "--log-level"} {
		require.NotContains(t, state, unused)
	}
	changes := help("changes", "--help")
	require.Contains(t, changes, "--after-seq")
	for _, unused := range []string{"--subject-prefix", "--replicas", "--log-level"} {
		require.NotContains(t, changes, unused)
	}
	require.Contains(t, help("streams", "-help"), "--replicas")
	require.Contains(t, help("help", "publish"), "--diff")
	require.Contains(t, help("-h"), "publish")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"publish", "board-b1-tasks", "update-task"}, "roomcast publish: want ROOM EVENT ID, got 2 argument(s)"},
		{[]string{"state", "board-b1", "-frob"}, "roomcast state: unknown flag: --frob"},
		{[]string{"changes", "board-b1-tasks", "--since", "soon"}, `roomcast changes: invalid argument "soon" for "--since"`},
		{[]string{"frobnicate"}, `roomcast: unknown command "frobnicate"`},
	} {
		var out, errOut bytes.Buffer
		require.Equal(t, exitUsage, run(context.Background(), tc.args, &out, &errOut), "%v", tc.args)
		got := strings.Split(strings.TrimSpace(errOut.String()), "\n")
		require.Len(t, got, 2, "one line and a hint: %q", errOut.String())
		require.Contains(t, got[0], tc.want)
		require.Contains(t, got[1], "--help")
	}

	for _, shell := range []string{"bash", "zsh", "fish"} {
		require.Contains(t, help("completion", shell), "roomcast", shell)
	}
	events := help("__complete", "publish", "board-b1-tasks", "")
	require.Equal(t, []string{"create-task", "update-task", "delete-task", ":4"}, strings.Fields(events),
		"EVENT completes to the room's events")
}

// TestCLIToken: the token verifies with the configured secret, or with the
// development secret serve keeps in its data directory.
func TestCLIToken(t *testing.T) {
	verify := func(tok, secret string) jwt.MapClaims {
		t.Helper()
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(strings.TrimSpace(tok), claims, func(*jwt.Token) (any, error) { return []byte(secret), nil },
			jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
		require.NoError(t, err)
		return claims
	}
	token := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"token"}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	secret := "0123456789abcdef0123456789abcdef"
	code, out, errOut := token("alice", "--jwt-secret", secret, "--ttl", "1h")
	require.Equal(t, exitOK, code, errOut)
	claims := verify(out, secret)
	require.Equal(t, "alice", claims["sub"])
	exp, err := claims.GetExpirationTime()
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(time.Hour), exp.Time, time.Minute)

	t.Setenv("ROOMCAST_JWT_SECRET", secret)
	code, out, _ = token("bob")
	require.Equal(t, exitOK, code)
	require.Equal(t, "bob", verify(out, secret)["sub"], "ROOMCAST_JWT_SECRET is read")
	t.Setenv("ROOMCAST_JWT_SECRET", "")

	dir := t.TempDir()
	code, _, errOut = token("alice", "--data-dir", dir)
	require.Equal(t, exitFailure, code)
	require.Contains(t, errOut, "no secret to sign with: set ROOMCAST_JWT_SECRET")
	secret2, devToken, err := devSecret(dir)
	require.NoError(t, err)
	require.Equal(t, "dev", verify(devToken, secret2)["sub"])
	again, _, err := devSecret(dir)
	require.NoError(t, err)
	require.Equal(t, secret2, again, "a restart keeps the development secret")
	code, out, errOut = token("alice", "--data-dir", dir)
	require.Equal(t, exitOK, code, errOut)
	require.Equal(t, "alice", verify(out, secret2)["sub"], "signed with serve's development secret")

	require.NoError(t, os.WriteFile(filepath.Join(dir, devSecretFile), []byte("short\n"), 0o600))
	code, _, errOut = token("alice", "--data-dir", dir)
	require.Equal(t, exitFailure, code)
	require.Contains(t, errOut, "too short")

	for _, bad := range [][]string{{"a*b", "--jwt-secret", secret}, {"alice", "--ttl", "0s", "--jwt-secret", secret}, {}} {
		code, out, _ := token(bad...)
		require.Equal(t, exitUsage, code, "%v", bad)
		require.Empty(t, out)
	}
	t.Setenv("ROOMCAST_JWT_PUBLIC_KEY", "/some/key.pem")
	code, _, errOut = token("alice", "--data-dir", dir)
	require.Equal(t, exitFailure, code)
	require.Contains(t, errOut, "ROOMCAST_JWT_PUBLIC_KEY is set")
}
