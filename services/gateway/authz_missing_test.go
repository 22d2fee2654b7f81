package gateway

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// lockedBuffer is a log destination the gateway's goroutines may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAuthzMissing: with no service on authz.join, a join says so (not
// "in time") and the log warns once; once an authorizer answers it decides,
// and a later outage warns again.
func TestAuthzMissing(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	var logs lockedBuffer
	tg := e.startGateway(func(c *Config) { c.Logger = zerolog.New(&logs) })
	c := connectUser(t, tg, "u1")
	warnings := func() int { return strings.Count(logs.String(), "no service answers authz.join") }

	for range 3 {
		err := c.mustFail(proto.CodeUnavailable, proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "board-b1"})
		require.Equal(t, "no service answers authz.join: cannot check access to board-b1", err.Message)
	}
	require.Equal(t, 1, warnings(), "one warning, not one per join")

	sub := e.answerAuthz(func(_, room string) bool { return room == "board-b1" })
	c.mustOK(proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "board-b1"})
	c.mustFail(proto.CodeForbidden, proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "board-b2"})
	require.NoError(t, sub.Unsubscribe())
	require.NoError(t, e.nc.Flush())
	c.mustFail(proto.CodeUnavailable, proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "org-o1"})
	require.Equal(t, 2, warnings(), "an outage after an answer warns again")
}

// TestAuthzOptional: AuthzOptional lets joins through while nobody answers
// authz.join, and only then: an authorizer that answers still decides, and
// rooms that are not the authorizer's (another user's) stay refused.
func TestAuthzOptional(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	tg := e.startGateway(func(c *Config) { c.AuthzOptional = true; c.AuthzCacheTTL = -1 })
	c := connectUser(t, tg, "u1")
	c.mustOK(proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "board-b1"})
	c.mustOK(proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "org-o1"})
	c.mustFail(proto.CodeForbidden, proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "user-u2"})

	e.answerAuthz(func(string, string) bool { return false })
	c.mustFail(proto.CodeForbidden, proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "board-b2"})

	// A service that is there but silent is not a missing one.
	e2 := newEnv(t)
	e2.answerRoomState(nil)
	silent := e2.startGateway(func(c *Config) { c.AuthzOptional = true; c.AuthzTimeout = 50 * time.Millisecond })
	sub, err := e2.nc.Subscribe(proto.SubjectAuthzJoin, func(*nats.Msg) {})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, e2.nc.Flush())
	c2 := connectUser(t, silent, "u1")
	msg := c2.mustFail(proto.CodeUnavailable, proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "board-b1"}).Message
	require.Contains(t, msg, "in time")
}
