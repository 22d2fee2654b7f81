package gateway

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// TestStateReaderBatches: callers that ask while a request is out share the
// next roomstate.getmany, each room named once in it, and none gets an answer
// to a request sent before it asked.
func TestStateReaderBatches(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()
	board := mustRoom(t, "board-b1")
	release := make(chan struct{})
	var mu sync.Mutex
	var batches [][]string
	sub, err := e.nc.Subscribe(proto.SubjectRoomStateGetMany, func(m *nats.Msg) {
		var a proto.RoomStatesArgs
		require.NoError(t, json.Unmarshal(m.Data, &a))
		mu.Lock()
		batches = append(batches, a.RoomNames)
		n := len(batches)
		mu.Unlock()
		if n == 1 {
			<-release // hold the first request while others ask
		}
		res := proto.RoomStatesResult{States: map[string]*proto.RoomState{}}
		for _, name := range a.RoomNames {
			res.States[name] = &proto.RoomState{Seq: uint64(n)} // which batch answered
		}
		b, _ := json.Marshal(res)
		require.NoError(t, m.Respond(b))
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, e.nc.Flush())

	first := make(chan *proto.RoomState, 1)
	go func() {
		st, err := tg.readState(context.Background(), board)
		require.NoError(t, err)
		first <- st
	}()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(batches) == 1 }, 5e9, 1e6)

	const later = 10
	var wg sync.WaitGroup
	got := make([]*proto.RoomState, later)
	for i := range later {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := tg.readState(context.Background(), board)
			require.NoError(t, err)
			got[i] = st
		}()
	}
	// They are all waiting once the sender has them pending.
	require.Eventually(t, func() bool {
		tg.states.mu.Lock()
		defer tg.states.mu.Unlock()
		return len(tg.states.pending[board.Name()]) == later
	}, 5e9, 1e6)
	close(release)
	wg.Wait()
	require.Equal(t, uint64(1), (<-first).Seq)
	for _, st := range got {
		require.Equal(t, uint64(2), st.Seq, "answered by the request sent after they asked")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, [][]string{{"board-b1"}, {"board-b1"}}, batches)
}

// TestStateReaderTimeout: a caller whose context ends before roomstate
// answers gets unavailable, in words the client reads (not context's).
func TestStateReaderTimeout(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()
	sub, err := e.nc.Subscribe(proto.SubjectRoomStateGetMany, func(*nats.Msg) {}) // never answers
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, e.nc.Flush())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = tg.states.read(ctx, mustRoom(t, "board-b1"))
	require.Equal(t, proto.CodeUnavailable, proto.CodeOf(err))
	require.Contains(t, err.Error(), "no answer in time")
	require.NotContains(t, err.Error(), "context")
}
