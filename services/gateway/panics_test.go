package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/panicguard/panictest"
	"github.com/roomcast/roomcast/proto"
)

// panicEnv is a gateway whose boundaries panic where armed.
func panicEnv(t *testing.T, mod ...func(*Config)) (*env, *testGateway, *panictest.Armed) {
	t.Helper()
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	a := &panictest.Armed{}
	tg := e.startGateway(append(mod, func(c *Config) { c.panicHook = a.Hook })...)
	return e, tg, a
}

func (tg *testGateway) panics(where string) float64 {
	return testutil.ToFloat64(tg.m.panics.WithLabelValues(where))
}

func (tg *testGateway) waitPanics(t *testing.T, where string, n float64) {
	t.Helper()
	require.Eventually(t, func() bool { return tg.panics(where) == n }, 5*time.Second, 10*time.Millisecond, where)
}

// TestPanicFanout: a delivery that panics after its first member was
// queued the broadcast. That member still gets it (its writer is not
// lost), the room is not left locked, the worker delivers the next message
// to both, and the member that missed one sees the gap in seq/prevSeq.
func TestPanicFanout(t *testing.T) {
	e, tg, a := panicEnv(t)
	c1, c2 := connectUser(t, tg, "u1"), connectUser(t, tg, "u2")
	c1.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	c2.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	tasks := mustRoom(t, "board-b1-tasks")

	a.Arm("fanout", 1)
	_, seqA := e.publish(tasks, "a", 1)
	tg.waitPanics(t, "fanout", 1)
	_, seqB := e.publish(tasks, "b", 2)
	got := map[uint64]int{}
	for _, c := range []*client{c1, c2} {
		b := c.broadcast()
		if b.Seq == seqA {
			got[seqA]++
			b = c.broadcast()
		} else {
			require.Equal(t, seqA, b.PrevSeq, "the gap is visible")
		}
		require.Equal(t, seqB, b.Seq)
		got[seqB]++
	}
	require.Equal(t, map[uint64]int{seqA: 1, seqB: 2}, got)
	c1.mustOK("removeFromRoom", proto.RoomArgs{RoomName: "board-b1"})
}

// TestPanicPersonal: the shared personal subscriptions' callback drops the
// message it panicked on and routes the next.
func TestPanicPersonal(t *testing.T) {
	e, tg, a := panicEnv(t, func(c *Config) { c.PersonalSubscriptions = PersonalShared })
	c := connectUser(t, tg, "u1")
	a.Arm("personal", 1)
	e.publish(mustRoom(t, "user-u1"), "u1", 1)
	tg.waitPanics(t, "personal", 1)
	_, seq := e.publish(mustRoom(t, "user-u1"), "u1", 2)
	require.Equal(t, seq, c.broadcast().Seq)
}

// TestPanicEndpoint: a CONNECT or call that panics closes its socket (1011),
// not the gateway: other sockets are served, new ones connect.
func TestPanicEndpoint(t *testing.T) {
	_, tg, a := panicEnv(t)
	c1, c2 := connectUser(t, tg, "u1"), connectUser(t, tg, "u2")
	a.Arm("endpoint", 1)
	c1.send(`420["endpoint",{"endpointName":"updateClient","endpointArgs":{"isActive":true}}]`)
	c1.waitClosed()
	tg.waitPanics(t, "endpoint", 1)
	c2.mustOK("updateClient", map[string]any{"isActive": true})
	connectUser(t, tg, "u1").mustOK("updateClient", map[string]any{"isActive": true})
}

// TestPanicKick: a kick that panics part-way fails closed: every socket of
// the user is closed (they reconnect and join again, asking the
// authorizer); the next kick is applied as usual.
func TestPanicKick(t *testing.T) {
	e, tg, a := panicEnv(t)
	c1, c2 := connectUser(t, tg, "u1"), connectUser(t, tg, "u2")
	c1.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	c2.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	kick := func(u string) {
		b, _ := json.Marshal(proto.KickRequest{RoomName: "board-b1", UserID: u})
		require.NoError(t, e.nc.Publish(proto.SubjectKick, b))
	}
	a.Arm("kick", 1)
	kick("u1")
	c1.waitClosed()
	tg.waitPanics(t, "kick", 1)
	kick("u2")
	require.Eventually(t, func() bool { return tg.roomMembers(mustRoom(t, "board-b1")) == 0 }, 5*time.Second, 10*time.Millisecond)
	c2.mustOK("updateClient", map[string]any{"isActive": true}) // still connected
}

// TestPanicRevoke: a revoke that panics part-way still ends the user's
// sockets with a DISCONNECT and notes the revoke (the same token is
// refused); a REVOCATIONS entry whose handling panics ends them too.
func TestPanicRevoke(t *testing.T) {
	e, tg, a := panicEnv(t)
	c1, other := connectUser(t, tg, "u1"), connectUser(t, tg, "u2")
	tok := token(t, "u1", time.Hour) // no iat: refused once u1 is revoked
	a.Arm("revoke", 1)
	require.NoError(t, e.nc.Publish(proto.RevokeSubject("u1"), nil))
	require.Equal(t, "41", c1.next())
	c1.waitClosed()
	tg.waitPanics(t, "revoke", 1)
	_, got := connect(t, tg, `{"token":"`+tok+`"}`)
	require.True(t, strings.HasPrefix(got, "44"), got)

	// From KV REVOCATIONS (another gateway's revoke, watched).
	c3 := connectUser(t, tg, "u3")
	a.Arm("revocation", 1)
	kv, err := e.js.KeyValue(context.Background(), proto.BucketRevocations)
	require.NoError(t, err)
	require.NoError(t, proto.RecordRevocation(context.Background(), kv, "u3", time.Now()))
	require.Equal(t, "41", c3.next())
	c3.waitClosed()
	tg.waitPanics(t, "revocation", 1)

	// Both serve on.
	c4 := connectUser(t, tg, "u4")
	require.NoError(t, e.nc.Publish(proto.RevokeSubject("u4"), nil))
	require.Equal(t, "41", c4.next())
	other.mustOK("updateClient", map[string]any{"isActive": true})
}

// TestPanicPresence: presence.get answers internal at once, then serves.
func TestPanicPresence(t *testing.T) {
	e, tg, a := panicEnv(t)
	connectUser(t, tg, "u1")
	a.Arm("presence", 2)
	ask := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var res proto.PresenceResult
		return proto.Request(ctx, e.nc, proto.SubjectPresenceGet, proto.PresenceArgs{UserIDs: []string{"u1"}}, &res)
	}
	for range 2 {
		require.Equal(t, proto.CodeInternal, proto.CodeOf(ask()))
	}
	require.Equal(t, 2.0, tg.panics("presence"))
	require.NoError(t, ask())
}
