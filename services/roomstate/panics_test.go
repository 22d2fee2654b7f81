package roomstate

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/panicguard/panictest"
	"github.com/roomcast/roomcast/proto"
)

// TestPanicsStopAtBoundaries: a panic in the consume loop, in folding a
// message, in writing a room or in a request is stopped there and counted;
// the service serves the next message; and the panicking one is not half
// applied: ROOM_STATE is not written for it, and it is terminated, not
// redelivered for ever (a batch that panics in the loop, before any of it
// is folded, is redelivered and folded once).
func TestPanicsStopAtBoundaries(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	var a panictest.Armed
	r := st.start(t, func(c *Config) {
		c.panicHook = a.Hook
		c.AckWait = time.Second
	})
	panics := func(where string) float64 { return r.metric(t, "roomcast_roomstate_panics_total", "where", where) }
	waitPanics := func(where string, n float64) {
		t.Helper()
		require.Eventually(t, func() bool { return panics(where) == n }, waitFor, 10*time.Millisecond)
	}
	tasks := mustRoom(t, "board-b1-tasks").Name()
	sprints := mustRoom(t, "board-b2-sprints").Name()
	s1 := st.publish(t, mustRoom(t, tasks), "t1", 1000)
	st.waitStates(t, map[string]proto.RoomState{tasks: {LastBroadcastTimestamp: 1000, Seq: s1}})

	// fold: t2 panics half-way; it is terminated and not written.
	a.Arm("fold", 1)
	st.publish(t, mustRoom(t, tasks), "t2", 2000)
	waitPanics("fold", 1)
	st.consumerIdle(t)
	require.Equal(t, proto.RoomState{LastBroadcastTimestamp: 1000, Seq: s1}, *st.kvState(t, tasks), "t2 not applied")
	s3 := st.publish(t, mustRoom(t, tasks), "t3", 3000)
	st.waitStates(t, map[string]proto.RoomState{tasks: {LastBroadcastTimestamp: 3000, Seq: s3}})

	// write: a room's batch panics before its write; terminated, not written.
	a.Arm("write", 1)
	st.publish(t, mustRoom(t, sprints), "s1", 4000)
	waitPanics("write", 1)
	st.consumerIdle(t)
	require.Nil(t, st.kvState(t, sprints), "s1 not applied")
	s5 := st.publish(t, mustRoom(t, sprints), "s2", 5000)
	st.waitStates(t, map[string]proto.RoomState{sprints: {LastBroadcastTimestamp: 5000, Seq: s5}})

	// loop: the consume loop panics with a batch in hand, before folding
	// any of it; it starts over and the batch comes back after AckWait.
	a.Arm("loop", 1)
	s6 := st.publish(t, mustRoom(t, tasks), "t6", 6000)
	waitPanics("loop", 1)
	st.waitStates(t, map[string]proto.RoomState{tasks: {LastBroadcastTimestamp: 6000, Seq: s6}})
	st.consumerIdle(t)

	// get, getmany: answered internal at once; the next request is served.
	for _, ep := range []struct {
		name string
		ask  func() error
	}{
		{"get", func() error { _, err := st.get(t, tasks); return err }},
		{"getmany", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var res proto.RoomStatesResult
			return proto.Request(ctx, st.nc, proto.SubjectRoomStateGetMany, proto.RoomStatesArgs{RoomNames: []string{tasks, sprints}}, &res)
		}},
	} {
		a.Arm(ep.name, 2)
		for range 2 {
			var pe *proto.Error
			err := ep.ask()
			require.True(t, errors.As(err, &pe), "%v", err)
			require.Equal(t, proto.CodeInternal, pe.Code)
		}
		require.Equal(t, 2.0, panics(ep.name))
		// Counted once the reply is sent.
		require.Eventually(t, func() bool {
			return r.metric(t, "roomcast_roomstate_requests_total", "endpoint", ep.name, "code", string(proto.CodeInternal)) == 2
		}, waitFor, 10*time.Millisecond)
		require.NoError(t, ep.ask())
	}
	got, err := st.get(t, sprints)
	require.NoError(t, err)
	require.Equal(t, &proto.RoomState{LastBroadcastTimestamp: 5000, Seq: s5}, got)
}
