package roomstate

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

// TestGetManyMatchesGet: the batched read gives, room by room, what Get
// gives: stored states, nothing for rooms never written, deleted or purged,
// the same state at every place a room is named; and it leaves to the key
// by key read what it cannot ask in one request.
func TestGetManyMatchesGet(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	store := newStateStore(st.kv, newMetrics(prometheus.NewRegistry()), zerolog.Nop())
	store.nc = st.nc
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	put := func(room string, s proto.RoomState) {
		b, err := json.Marshal(s)
		require.NoError(t, err)
		_, err = st.kv.Put(ctx, room, b)
		require.NoError(t, err)
	}
	put("board-b1", proto.RoomState{LastBroadcastTimestamp: 10, Seq: 3})
	put("org-o1", proto.RoomState{LastBroadcastTimestamp: 20, Seq: 7})
	put("board-b1", proto.RoomState{LastBroadcastTimestamp: 30, Seq: 9}) // a newer value
	put("board-gone", proto.RoomState{Seq: 1})
	require.NoError(t, st.kv.Delete(ctx, "board-gone"))
	put("board-purged", proto.RoomState{Seq: 2})
	require.NoError(t, st.kv.Purge(ctx, "board-purged"))

	rooms := []string{"board-b1", "board-never", "org-o1", "board-gone", "board-purged", "board-b1"}
	states, err := store.GetMany(ctx, rooms)
	require.NoError(t, err)
	require.Len(t, states, len(rooms))
	for i, r := range rooms {
		want, err := store.Get(ctx, r)
		require.NoError(t, err)
		require.Equal(t, want, states[i], "%s", r)
	}
	require.Equal(t, &proto.RoomState{LastBroadcastTimestamp: 30, Seq: 9}, states[0])

	// None of them stored: the server says "no results".
	states, err = store.GetMany(ctx, []string{"board-x", "board-y"})
	require.NoError(t, err)
	require.Equal(t, []*proto.RoomState{nil, nil}, states)

	// More than one request may name: key by key.
	many := make([]string, maxMultiLast+1)
	for i := range many {
		many[i] = fmt.Sprintf("board-m%d", i)
	}
	_, err = store.GetMany(ctx, many)
	require.ErrorIs(t, err, errNoMultiGet)
	// No connection for it: key by key.
	store.nc = nil
	_, err = store.GetMany(ctx, rooms)
	require.ErrorIs(t, err, errNoMultiGet)
}

// TestGetManyBadValue: a stored value that is not a room state fails the
// batched read as it fails Get.
func TestGetManyBadValue(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	store := newStateStore(st.kv, newMetrics(prometheus.NewRegistry()), zerolog.Nop())
	store.nc = st.nc
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := st.kv.Put(ctx, "board-bad", []byte("not json"))
	require.NoError(t, err)
	_, err = store.GetMany(ctx, []string{"board-bad"})
	require.ErrorIs(t, err, errBadValue)
	_, err = store.Get(ctx, "board-bad")
	require.ErrorIs(t, err, errBadValue)
}

// BenchmarkGetMany: the states of 1,000 rooms (half stored), over TCP to
// the server, in one batched read against key by key (16 at once, as
// getmany did).
func BenchmarkGetMany(b *testing.B) {
	_, nc, js := natstest.RunStack(b, proto.StoreConfig{})
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, proto.BucketRoomState)
	require.NoError(b, err)
	store := newStateStore(kv, newMetrics(prometheus.NewRegistry()), zerolog.Nop())
	store.nc = nc
	rooms := make([]string, proto.MaxBatchRooms)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("board-b%d", i)
		if i%2 == 0 {
			_, err := kv.Put(ctx, rooms[i], []byte(`{"lastBroadcastTimestamp":1,"seq":2}`))
			require.NoError(b, err)
		}
	}
	b.Run("batched", func(b *testing.B) {
		for b.Loop() {
			if _, err := store.GetMany(ctx, rooms); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("key-by-key", func(b *testing.B) {
		for b.Loop() {
			var g errgroup.Group
			g.SetLimit(parallelReads)
			for _, r := range rooms {
				g.Go(func() error { _, err := store.Get(ctx, r); return err })
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestGetManyUnansweredRetries: a batched read that gets no answer at all
// (here a stalled server: something takes the request and never answers; a
// role that may not publish to the bare DIRECT.GET subject looks the same)
// is counted and paused: the reads right after it go key by key without
// asking. Once the server answers again, a batched read after the pause
// is answered, with the stored states.
func TestGetManyUnansweredRetries(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	m := newMetrics(prometheus.NewRegistry())
	store := newStateStore(st.kv, m, zerolog.Nop())
	store.firstReply, store.retryMin = 100*time.Millisecond, time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := st.kv.Put(ctx, "board-b1", []byte(`{"lastBroadcastTimestamp":5,"seq":6}`))
	require.NoError(t, err)

	// Another server, whose DIRECT.GET subject a subscriber takes: while
	// stalled it answers nothing; then it relays the request to the stack's
	// server and its replies back, in order.
	nc := natstest.Connect(t, natstest.RunServer(t))
	subject := proto.DirectGetSubject(proto.KVStream(st.kv.Bucket()))
	var asked atomic.Int32
	var stalled atomic.Bool
	stalled.Store(true)
	_, err = nc.Subscribe(subject, func(req *nats.Msg) {
		asked.Add(1)
		if stalled.Load() {
			return
		}
		inbox := st.nc.NewInbox()
		_, err := st.nc.Subscribe(inbox, func(r *nats.Msg) {
			_ = nc.PublishMsg(&nats.Msg{Subject: req.Reply, Header: r.Header, Data: r.Data})
		})
		if err == nil {
			_ = st.nc.PublishRequest(subject, inbox, req.Data)
		}
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	store.nc = nc

	_, err = store.GetMany(ctx, []string{"board-b1"})
	require.ErrorIs(t, err, errNoMultiGet)
	require.Equal(t, 1.0, testutil.ToFloat64(m.multiUnanswered))
	_, err = store.GetMany(ctx, []string{"board-b1"})
	require.ErrorIs(t, err, errNoMultiGet, "paused: key by key")
	require.NoError(t, nc.Flush())
	require.Equal(t, int32(1), asked.Load(), "not asked again during the pause")

	stalled.Store(false)
	var states []*proto.RoomState
	require.Eventually(t, func() bool {
		states, err = store.GetMany(ctx, []string{"board-b1", "board-none"})
		return err == nil
	}, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, []*proto.RoomState{{LastBroadcastTimestamp: 5, Seq: 6}, nil}, states)
	require.Equal(t, int32(2), asked.Load(), "asked again once after the pause")
	require.Equal(t, 1.0, testutil.ToFloat64(m.multiUnanswered))
}

// TestMultiPauseDoubles: each unanswered read in a row pauses twice as
// long as the one before, up to the most; an answer starts again from the
// first.
func TestMultiPauseDoubles(t *testing.T) {
	var p multiPause
	now := time.Unix(1000, 0)
	var waits []time.Duration
	for range 5 {
		waits = append(waits, p.unanswered(now, time.Second, 5*time.Second))
	}
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}, waits)
	require.True(t, p.paused(now.Add(4*time.Second)))
	require.False(t, p.paused(now.Add(5*time.Second)))
	p.answered()
	require.Equal(t, time.Second, p.unanswered(now, time.Second, 5*time.Second))
}
