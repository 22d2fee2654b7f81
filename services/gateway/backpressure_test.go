package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// TestFanoutDropsWhenFull: with the one fan-out worker held, a room's
// messages beyond its channel's room are dropped (nats.go, channel
// subscription) and so are a user's personal messages (the shared wildcard's
// callback), neither waits; each drop is counted once; the member gets what
// the channel held, and sees the gap in seq/prevSeq.
func TestFanoutDropsWhenFull(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	held, release := make(chan struct{}), make(chan struct{})
	holdOnce := false
	tg := e.startGateway(func(c *Config) {
		c.FanoutWorkers, c.FanoutQueue = 1, 2
		c.panicHook = func(where string) {
			// Only the fan-out worker runs this hook; it holds the first
			// delivery until released.
			if where == "fanout" && !holdOnce {
				holdOnce = true
				close(held)
				<-release
			}
		}
	})
	c := connectUser(t, tg, "u1")
	c.mustOK(proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "board-b1"})
	board := mustRoom(t, "board-b1")
	dropped := func() float64 { return testutil.ToFloat64(tg.m.fanoutDropped) }

	_, first := e.publish(board, "m0", 1)
	<-held
	const more = 10
	for i := 1; i <= more; i++ {
		e.publish(board, fmt.Sprintf("m%d", i), int64(1+i))
	}
	// The worker is held: 2 wait in the channel, the rest are dropped.
	require.Eventually(t, func() bool { return dropped() == more-2 }, 5*time.Second, time.Millisecond)
	for i := 0; i < 3; i++ {
		e.publish(mustRoom(t, "user-u1"), fmt.Sprintf("p%d", i), int64(20+i))
	}
	require.Eventually(t, func() bool { return dropped() == more-2+3 }, 5*time.Second, time.Millisecond)

	close(release)
	b := c.broadcast()
	require.Equal(t, first, b.Seq)
	b1, b2 := c.broadcast(), c.broadcast()
	require.Equal(t, "board-b1", b1.Destination)
	require.Equal(t, []uint64{b.Seq, b1.Seq}, []uint64{b1.PrevSeq, b2.PrevSeq})
	c.noBroadcast() // the dropped ones never come
	// The next one shows the gap: its prevSeq is the last dropped one's.
	_, last := e.publish(board, "after", 100)
	b3 := c.broadcast()
	require.Equal(t, last, b3.Seq)
	require.Greater(t, b3.PrevSeq, b2.Seq)
	require.Equal(t, float64(more-2+3), dropped())

	// A room's count outlives its subscriptions.
	c.mustOK(proto.EndpointRemoveFromRoom, proto.RoomArgs{RoomName: "board-b1"})
	require.Empty(t, tg.RoomSubscriptions())
	require.Equal(t, float64(more-2+3), dropped())
}
