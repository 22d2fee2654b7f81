package backfill

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

// TestReplicatedStream runs the service against stream ROOMS at 3 replicas
// on a 3-node cluster: reads the index answers use direct gets settled with
// the leader (index), the others a consumer; never the unchecked walk of a
// follower (direct). The answers are the same as ever.
func TestReplicatedStream(t *testing.T) {
	servers := natstest.RunCluster(t, 3)
	nc := natstest.Connect(t, servers[0])
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	store := proto.StoreConfig{Replicas: 3}
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return proto.Ensure(ctx, js, store) == nil
	}, 20*time.Second, 100*time.Millisecond)

	reg := prometheus.NewRegistry()
	// The service talks to another node than the publisher.
	cfg := Config{NATSURL: servers[1].ClientURL(), Store: store, Registry: reg, Logger: zerolog.New(io.Discard)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	f := &fixture{nc: nc, js: js, pub: proto.NewPublisher(js, store.Subjects), reg: reg, cfg: cfg}
	require.Eventually(t, func() bool {
		var res proto.ChangesResult
		return f.request(proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-ready-tasks", Cursor: cursorAfter(0)}, &res) == nil
	}, 10*time.Second, 20*time.Millisecond)

	tasks := room(t, "board-b1-tasks")
	now := time.Now().UnixMilli()
	var seqs []uint64
	for i := range 5 {
		seqs = append(seqs, f.publish(t, tasks, create(fmt.Sprintf("t%d", i), now+int64(i))))
	}
	before := f.reads(t, readIndex)
	var res proto.ChangesResult
	require.Eventually(t, func() bool {
		res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(seqs[1])})
		return f.reads(t, readIndex) > before
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"t2", "t3", "t4"}, ids(res.Changes))
	require.True(t, res.Complete)

	// Newer than the index may know yet: the leader is asked.
	last := f.publish(t, tasks, update("t0", now+10, `{"a":1}`))
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(seqs[3])})
	require.Equal(t, []string{"t4", "t0"}, ids(res.Changes))
	require.Equal(t, last, res.Changes[1].Seq)

	// Pages through the index and the leader.
	var got []string
	cur := cursorAfter(0)
	for page := 0; ; page++ {
		require.Less(t, page, 10)
		r := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cur, Limit: 2})
		got = append(got, ids(r.Changes)...)
		if r.Next == nil {
			break
		}
		cur = *r.Next
	}
	require.Equal(t, []string{"t0", "t1", "t2", "t3", "t4", "t0"}, got) // t0 again: its latest change is newer

	// A room the index does not know: a consumer.
	consumers := f.reads(t, readConsumer)
	res = f.changes(t, proto.ChangesArgs{RoomName: "board-b9-tasks", Cursor: cursorAfter(0)})
	require.Empty(t, res.Changes)
	require.Equal(t, consumers+1, f.reads(t, readConsumer))
	require.Zero(t, metricValue(t, reg, "roomcast_sync_reads_total", map[string]string{"method": readDirect}), "no unchecked walk on a follower")
}
