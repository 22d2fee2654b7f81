package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func TestKickRemovesUserAndDropsCache(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	allowed := make(chan bool, 10)
	allowed <- true
	e.answerAuthz(func(u, room string) bool {
		select {
		case a := <-allowed:
			return a
		default:
			return false
		}
	})
	g1, g2 := e.startGateway(), e.startGateway()
	c1, c2 := connectUser(t, g1, "u1"), connectUser(t, g2, "u1")
	c1.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	allowed <- true
	c2.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	other := connectUser(t, g1, "u2")
	allowed <- true
	other.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})

	b, _ := json.Marshal(proto.KickRequest{RoomName: "board-b1-tasks", UserID: "u1"})
	require.NoError(t, e.nc.Publish(proto.SubjectKick, b))
	for _, g := range []*testGateway{g1, g2} {
		require.Eventually(t, func() bool {
			for _, s := range g.userSockets("u1") {
				if s.inRoom("board-b1") {
					return false
				}
			}
			return true
		}, 5*time.Second, 10*time.Millisecond)
	}
	require.Equal(t, 1, g1.roomMembers(mustRoom(t, "board-b1")))
	require.NotContains(t, g2.RoomSubscriptions(), "live.rooms.board.b1")
	// The cached yes is gone: the authorizer is asked again and says no.
	c1.mustFail(proto.CodeForbidden, "addToRoom", proto.RoomArgs{RoomName: "board-b1"})
}

func TestRevokeDisconnectsEveryGateway(t *testing.T) {
	e := newEnv(t)
	g1, g2 := e.startGateway(), e.startGateway()
	c1, c2 := connectUser(t, g1, "u1"), connectUser(t, g2, "u1")
	other := connectUser(t, g1, "u2")
	require.NoError(t, e.nc.Publish(proto.RevokeSubject("u1"), nil))
	for _, c := range []*client{c1, c2} {
		require.Equal(t, "41", c.next())
		c.waitClosed()
	}
	other.mustOK("updateClient", map[string]any{"isActive": false})
}

func TestTokenExpiryDisconnects(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: "u1", ExpiresAt: jwt.NewNumericDate(time.Now().Add(1100 * time.Millisecond)),
	}).SignedString([]byte(testSecret))
	require.NoError(t, err)
	c, got := connect(t, tg, `{"token":"`+tok+`"}`)
	require.True(t, strings.HasPrefix(got, "40{"), got)
	require.Equal(t, "41", c.next())
	c.waitClosed()
	require.Equal(t, float64(1), tg.counter(tg.m.authFailures.WithLabelValues("expired_while_connected")))
}

func TestPresence(t *testing.T) {
	e := newEnv(t)
	g1, g2 := e.startGateway(), e.startGateway()
	a1, a2 := connectUser(t, g1, "a"), connectUser(t, g2, "a")
	connectUser(t, g1, "b")
	ask := func() map[string]bool {
		var res proto.PresenceResult
		require.NoError(t, proto.Request(context.Background(), e.nc, proto.SubjectPresenceGet, proto.PresenceArgs{UserIDs: []string{"a", "b", "c"}}, &res))
		return res.Active
	}
	require.Equal(t, map[string]bool{"a": false, "b": false, "c": false}, ask())
	a1.mustOK("updateClient", map[string]any{"isActive": true})
	a2.mustOK("updateClient", map[string]any{"isActive": false})
	require.Eventually(t, func() bool { return ask()["a"] }, 5*time.Second, 20*time.Millisecond)
	// Active while any socket, on any gateway, is.
	a1.send("41")
	a1.waitClosed()
	require.Eventually(t, func() bool { return !ask()["a"] }, 5*time.Second, 20*time.Millisecond)
	a2.mustOK("updateClient", map[string]any{"isActive": true})
	require.Eventually(t, func() bool { return ask()["a"] }, 5*time.Second, 20*time.Millisecond)

	err := proto.Request(context.Background(), e.nc, proto.SubjectPresenceGet, proto.PresenceArgs{UserIDs: []string{"a.*"}}, nil)
	require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err))
}

func TestDrain(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.DrainGrace = 200 * time.Millisecond })
	cs := []*client{connectUser(t, tg, "u1"), connectUser(t, tg, "u2"), connectUser(t, tg, "u3")}
	resp, err := http.Get(tg.url + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	tg.cancel()
	for _, c := range cs {
		c.waitClosed() // a transport close, not a DISCONNECT: clients reconnect elsewhere
		select {
		case f := <-c.frames:
			t.Fatalf("got %q before the close", f)
		default:
		}
	}
	select {
	case err := <-tg.done:
		require.NoError(t, err)
		tg.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	_, err = dial(t, tg, "", nil)
	require.Error(t, err)
}

// TestRevokeDuringAnAuthzRequest: a yes that was on its way when the revoke
// came is not cached: the revoke took it back, and the user's next read is
// asked again.
func TestRevokeDuringAnAuthzRequest(t *testing.T) {
	e := newEnv(t)
	stateAsked := make(chan struct{}, 4)
	sub, err := e.nc.Subscribe(proto.SubjectRoomStateGetMany, func(m *nats.Msg) {
		stateAsked <- struct{}{}
		_ = m.Respond([]byte(`{"states":{}}`))
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	inFlight, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	authz, err := e.nc.Subscribe(proto.SubjectAuthzJoin, func(m *nats.Msg) {
		if first.CompareAndSwap(false, true) {
			close(inFlight)
			<-release
			_ = m.Respond([]byte(`{"allow":true}`))
			return
		}
		_ = m.Respond([]byte(`{"allow":false}`))
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = authz.Unsubscribe() })
	require.NoError(t, e.nc.Flush())
	tg := e.startGateway()

	c := connectsWith(t, tg, issuedAt(t, "u1", time.Now().Add(-2*time.Second)))
	c.send(`420["endpoint",{"endpointName":"getRoomState","endpointArgs":{"roomName":"board-b1"}}]`)
	<-inFlight
	require.NoError(t, e.nc.Publish(proto.RevokeSubject("u1"), nil))
	require.Equal(t, "41", c.next())
	close(release)
	select {
	case <-stateAsked: // the yes was taken: past the point where it is cached
	case <-time.After(5 * time.Second):
		t.Fatal("the read never got past authorization")
	}
	a := tg.authz.(*natsAuthorizer)
	a.mu.Lock()
	_, cached := a.cache[cacheKey("u1", mustRoom(t, "board-b1"))]
	a.mu.Unlock()
	require.False(t, cached, "a yes asked before the revoke was cached after it")
	fresh := connectsWith(t, tg, issuedAt(t, "u1", time.Now().Add(2*time.Second)))
	fresh.mustFail(proto.CodeForbidden, proto.EndpointGetRoomState, proto.RoomArgs{RoomName: "board-b1"})
}
