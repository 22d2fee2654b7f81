package roomstate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// testRooms is one room of every stored kind, plus a second board.
func testRooms(t *testing.T) []proto.Room {
	t.Helper()
	mk := func(r proto.Room, err error) proto.Room {
		require.NoError(t, err)
		return r
	}
	return []proto.Room{
		mk(proto.UserRoom("u1")),
		mk(proto.OrgRoom("o1")),
		mk(proto.BoardRoom("b1")),
		mk(proto.BoardTasksRoom("b1")),
		mk(proto.BoardSprintsRoom("b1")),
		mk(proto.BoardTasksRoom("b2")),
		mk(proto.ChatRoom("alice", "bob")),
	}
}

// model is what ROOM_STATE must converge to: per room, the largest
// updatedAt and the largest sequence published.
type model struct {
	mu     sync.Mutex
	states map[string]proto.RoomState
}

func newModel() *model { return &model{states: make(map[string]proto.RoomState)} }

func (m *model) add(room proto.Room, updatedAt int64, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[room.Name()] = mergeState(m.states[room.Name()], proto.RoomState{LastBroadcastTimestamp: updatedAt, Seq: seq})
}

func (m *model) snapshot() map[string]proto.RoomState {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]proto.RoomState, len(m.states))
	for k, v := range m.states {
		out[k] = v
	}
	return out
}

func TestInterleavedRooms(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	r := st.start(t, nil)
	rooms := testRooms(t)
	want := newModel()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		room := rooms[rng.IntN(len(rooms))]
		ts := int64(1_700_000_000_000 + rng.IntN(1_000_000)) // deliberately not monotonic
		want.add(room, ts, st.publish(t, room, fmt.Sprintf("r%d", i), ts))
	}
	st.waitStates(t, want.snapshot())
	st.consumerIdle(t)
	for _, room := range rooms {
		got, err := st.get(t, room.Name())
		require.NoError(t, err)
		w := want.snapshot()[room.Name()]
		require.Equal(t, &w, got, room.Name())
	}
	require.Equal(t, 500.0, r.metric(t, "roomcast_roomstate_messages_processed_total"))
	require.Equal(t, 0.0, r.metric(t, "roomcast_roomstate_skipped_messages_total"))
	require.Equal(t, 0.0, r.metric(t, "roomcast_roomstate_refused_total"))
	require.Equal(t, 500.0, r.metric(t, "roomcast_roomstate_lag_seconds"), "one lag sample per message")
}

func TestDuplicatesAndOutOfOrder(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	r := st.start(t, nil)
	room, err := proto.BoardTasksRoom("b1")
	require.NoError(t, err)

	// Newest first, then older ones: the timestamp stays, the seq moves on.
	st.publish(t, room, "t1", 3000)
	st.waitStates(t, map[string]proto.RoomState{room.Name(): {LastBroadcastTimestamp: 3000, Seq: 1}})
	st.publish(t, room, "t2", 1000)
	seq := st.publish(t, room, "t3", 2000)
	st.waitStates(t, map[string]proto.RoomState{room.Name(): {LastBroadcastTimestamp: 3000, Seq: seq}})

	// A retried publish (same Nats-Msg-Id) is stored once.
	ack, err := st.pub.Publish(context.Background(), room, envelope(room, "t3", 2000))
	require.NoError(t, err)
	require.True(t, ack.Duplicate)

	// Redelivery of everything (the durable consumer is deleted and the
	// service recreates it from the start) changes nothing and writes nothing.
	st.consumerIdle(t)
	r.stop(t)
	require.NoError(t, st.js.DeleteConsumer(context.Background(), proto.StreamRooms, DefaultDurable))
	r2 := st.start(t, nil)
	require.Eventually(t, func() bool { return r2.metric(t, "roomcast_roomstate_messages_processed_total") == 3 }, waitFor, 10*time.Millisecond)
	st.consumerIdle(t)
	require.Equal(t, 0.0, r2.metric(t, "roomcast_roomstate_kv_writes_total"), "replayed messages must not rewrite state")
	require.Equal(t, &proto.RoomState{LastBroadcastTimestamp: 3000, Seq: seq}, st.kvState(t, room.Name()))
}

func TestRestartCatchesUp(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	rooms := testRooms(t)
	want := newModel()
	small := func(c *Config) { c.BatchSize = 50 }
	r := st.start(t, small)

	// Publishing goes on throughout: the service is stopped while messages
	// are arriving, stays down for a while, and comes back.
	const n = 1500
	published := make(chan int, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			room := rooms[i%len(rooms)]
			ts := int64(1_700_000_000_000 + i)
			ack, err := st.pub.Publish(context.Background(), room, envelope(room, fmt.Sprintf("m%d", i), ts))
			if err != nil {
				t.Error(err)
				return
			}
			want.add(room, ts, ack.Sequence)
			published <- i
		}
	}()
	require.Eventually(t, func() bool { return r.metric(t, "roomcast_roomstate_messages_processed_total") >= 100 }, waitFor, time.Millisecond)
	r.stop(t)
	stoppedAt := len(published)
	for len(published) < stoppedAt+300 && len(published) < n { // down while 300 more arrive
		select {
		case <-done:
		case <-time.After(time.Millisecond):
		}
	}
	r2 := st.start(t, small)
	<-done
	t.Logf("stopped after %.0f processed, with %d published; restarted with %d published", r.metric(t, "roomcast_roomstate_messages_processed_total"), stoppedAt, len(published))
	st.waitStates(t, want.snapshot())
	st.consumerIdle(t)
	total := r.metric(t, "roomcast_roomstate_messages_processed_total") + r2.metric(t, "roomcast_roomstate_messages_processed_total")
	require.GreaterOrEqual(t, total, float64(n))
	require.Eventually(t, func() bool { return r2.metric(t, "roomcast_roomstate_lag_sequences") == 0 }, waitFor, 10*time.Millisecond)
}

func TestPoisonMessagesSkipped(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	r := st.start(t, nil)
	room, err := proto.BoardTasksRoom("b1")
	require.NoError(t, err)
	subject := st.store.Subjects.Publish(room)
	ctx := context.Background()

	_, err = st.js.Publish(ctx, subject, []byte("{not json"))
	require.NoError(t, err)
	_, err = st.js.Publish(ctx, subject, []byte(`{"event":"no-such-event","id":"x","updatedAt":5}`))
	require.NoError(t, err)
	// Stored by the stream (rooms.board.>) but not a room subject.
	_, err = st.js.Publish(ctx, subject+".extra", mustEncode(t, st, room, envelope(room, "x", 9000)))
	require.NoError(t, err)
	seq := st.publish(t, room, "t1", 4000)

	st.waitStates(t, map[string]proto.RoomState{room.Name(): {LastBroadcastTimestamp: 4000, Seq: seq}})
	st.consumerIdle(t)
	require.Equal(t, 1.0, r.metric(t, "roomcast_roomstate_refused_total", "reason", string(proto.ReasonNotJSON)))
	require.Equal(t, 1.0, r.metric(t, "roomcast_roomstate_refused_total", "reason", string(proto.ReasonEvent)))
	require.Equal(t, 1.0, r.metric(t, "roomcast_roomstate_refused_total", "reason", string(proto.ReasonSubject)))
	require.Equal(t, 1.0, r.metric(t, "roomcast_roomstate_messages_processed_total"))
}

func mustEncode(t *testing.T, st *stack, room proto.Room, env proto.Envelope) []byte {
	t.Helper()
	data, _, err := st.pub.Encode(room, env)
	require.NoError(t, err)
	return data
}

func TestTwoReplicas(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	small := func(c *Config) { c.BatchSize = 20 }
	r1, r2 := st.start(t, small), st.start(t, small)
	rooms := testRooms(t)[:3]
	want := newModel()

	// Four publishers at once, timestamps shuffled, so both replicas get
	// interleaved pieces of the same rooms.
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 7))
			for i := range 300 {
				room := rooms[rng.IntN(len(rooms))]
				ts := int64(1_700_000_000_000 + rng.IntN(100_000))
				ack, err := st.pub.Publish(context.Background(), room, envelope(room, fmt.Sprintf("p%d-%d", p, i), ts))
				if err != nil {
					t.Error(err)
					return
				}
				want.add(room, ts, ack.Sequence)
			}
		}()
	}
	wg.Wait()
	st.waitStates(t, want.snapshot())
	st.consumerIdle(t)
	p1 := r1.metric(t, "roomcast_roomstate_messages_processed_total")
	p2 := r2.metric(t, "roomcast_roomstate_messages_processed_total")
	t.Logf("replica 1 processed %.0f, replica 2 %.0f; conflicts %.0f + %.0f", p1, p2,
		r1.metric(t, "roomcast_roomstate_kv_conflicts_total"), r2.metric(t, "roomcast_roomstate_kv_conflicts_total"))
	require.GreaterOrEqual(t, p1+p2, 1200.0)
	// Both stay correct afterwards, whichever answers.
	for _, room := range rooms {
		got, err := st.get(t, room.Name())
		require.NoError(t, err)
		w := want.snapshot()[room.Name()]
		require.Equal(t, &w, got)
	}
}

// burst publishes n events to room asynchronously, as fast as the server
// takes them, with timestamps base, base+1, …; it returns the last sequence.
func (st *stack) burst(t *testing.T, room proto.Room, n int, prefix string, base int64) uint64 {
	t.Helper()
	subject := st.store.Subjects.Publish(room)
	var last jetstream.PubAckFuture
	for i := range n {
		data := mustEncode(t, st, room, envelope(room, fmt.Sprintf("%s%d", prefix, i), base+int64(i)))
		f, err := st.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data})
		require.NoError(t, err)
		last = f
		if i%1000 == 999 { // stay under the client's limit of outstanding publishes
			select {
			case <-st.js.PublishAsyncComplete():
			case <-time.After(waitFor):
				t.Fatal("async publishes not acknowledged")
			}
		}
	}
	select {
	case ack := <-last.Ok():
		return ack.Sequence
	case err := <-last.Err():
		t.Fatal(err)
	case <-time.After(waitFor):
		t.Fatal("async publish not acknowledged")
	}
	return 0
}

// A burst of 10,000 events to one room must be a handful of KV writes.
func TestCoalescing(t *testing.T) {
	const n = 10_000
	st := newStack(t, proto.StoreConfig{})
	r := st.start(t, nil)
	room, err := proto.BoardTasksRoom("b1")
	require.NoError(t, err)

	// Published while the service is consuming.
	seq := st.burst(t, room, n, "t", 1_700_000_000_000)
	st.waitStates(t, map[string]proto.RoomState{room.Name(): {LastBroadcastTimestamp: 1_700_000_000_000 + n - 1, Seq: seq}})
	st.consumerIdle(t)
	writes := r.metric(t, "roomcast_roomstate_kv_writes_total")
	t.Logf("%d events to one room, published while consuming: %.0f KV writes in %.0f batches", n, writes, r.metric(t, "roomcast_roomstate_batches_total"))
	require.Equal(t, float64(n), r.metric(t, "roomcast_roomstate_messages_processed_total"))
	require.LessOrEqual(t, writes, 50.0, "a burst must coalesce")

	// The same burst as a backlog (published while the service was down).
	r.stop(t)
	seq = st.burst(t, room, n, "u", 1_750_000_000_000)
	r2 := st.start(t, nil)
	st.waitStates(t, map[string]proto.RoomState{room.Name(): {LastBroadcastTimestamp: 1_750_000_000_000 + n - 1, Seq: seq}})
	st.consumerIdle(t)
	writes = r2.metric(t, "roomcast_roomstate_kv_writes_total")
	t.Logf("a backlog of %d events to one room: %.0f KV writes in %.0f batches", n, writes, r2.metric(t, "roomcast_roomstate_batches_total"))
	require.LessOrEqual(t, writes, 50.0, "a backlog must coalesce")
}
