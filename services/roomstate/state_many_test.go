package roomstate

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
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

// TestGetManyUnansweredGivesUp: a batched read that gets no answer at all
// (the role may not publish to the bare DIRECT.GET subject: the server drops
// the request) is given up for good after multiFirstReply, and later reads
// go key by key at once.
func TestGetManyUnansweredGivesUp(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	store := newStateStore(st.kv, newMetrics(prometheus.NewRegistry()), zerolog.Nop())
	// Another server, where something takes the request and never answers.
	nc := natstest.Connect(t, natstest.RunServer(t))
	var asked atomic.Int32
	_, err := nc.Subscribe(jetstream.DefaultAPIPrefix+"DIRECT.GET.KV_"+st.kv.Bucket(), func(*nats.Msg) { asked.Add(1) })
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	store.nc = nc
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = store.GetMany(ctx, []string{"board-b1"})
	require.ErrorIs(t, err, errNoMultiGet)
	require.True(t, store.multiOff.Load())
	_, err = store.GetMany(ctx, []string{"board-b1"})
	require.ErrorIs(t, err, errNoMultiGet)
	require.NoError(t, nc.Flush())
	require.Equal(t, int32(1), asked.Load(), "asked once, then not again")
}
