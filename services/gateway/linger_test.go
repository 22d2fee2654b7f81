package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// TestSubscriptionLinger: a socket that comes back (same client id, same
// user) within SubscriptionLinger finds its rooms' and its user's
// subscriptions still there (no new ones) and gets broadcasts through them;
// past the linger they are dropped.
func TestSubscriptionLinger(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	// Per room, so that the user's and client's subscriptions linger too.
	perRoom := func(c *Config) { c.PersonalSubscriptions = PersonalPerRoom }
	tg := e.startGateway(perRoom, func(c *Config) { c.SubscriptionLinger = time.Hour })
	auth := func() string { return fmt.Sprintf(`{"token":%q,"clientId":"tab1"}`, token(t, "u1", time.Hour)) }

	c, res := connect(t, tg, auth())
	require.Contains(t, res, `40{"sid"`)
	c.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	const subs = 1 + 1 + 2 + 3 // client, user, two chats, the board's three
	require.Equal(t, float64(subs), tg.counter(tg.m.subscriptions))
	before := tg.RoomSubscriptions()

	c.conn.Close()
	require.Eventually(t, func() bool { return tg.counter(tg.m.sockets) == 0 }, 5*time.Second, time.Millisecond)
	require.Equal(t, float64(subs), tg.counter(tg.m.subscriptions), "kept while lingering")
	require.Equal(t, float64(0), tg.counter(tg.m.rooms), "rooms without members are not counted")

	c, res = connect(t, tg, auth())
	require.Contains(t, res, `40{"sid"`)
	c.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	require.Equal(t, float64(subs), tg.counter(tg.m.subscriptions), "no new subscription on the way back")
	require.ElementsMatch(t, before, tg.RoomSubscriptions())
	require.Equal(t, float64(3), tg.counter(tg.m.rooms)) // client, user, board
	env1, seq1 := e.publish(mustRoom(t, "board-b1-tasks"), "t1", 1)
	b := c.broadcast()
	require.Equal(t, string(env1), string(b.Data))
	require.Equal(t, seq1, b.Seq)

	// A short linger: dropped soon after the last socket left.
	short := e.startGateway(perRoom, func(c *Config) { c.SubscriptionLinger = 20 * time.Millisecond })
	c2 := connectUser(t, short, "u2")
	c2.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b2"})
	require.NotEmpty(t, short.RoomSubscriptions())
	c2.conn.Close()
	require.Eventually(t, func() bool {
		return len(short.RoomSubscriptions()) == 0 && short.counter(short.m.subscriptions) == 0
	}, 5*time.Second, 5*time.Millisecond)
}
