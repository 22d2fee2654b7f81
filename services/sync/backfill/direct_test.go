package backfill

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
)

// metricValue is the value of the counter name with exactly labels in reg,
// 0 when it has not been counted yet.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	metrics:
		for _, m := range fam.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func (f *fixture) reads(t *testing.T, method string) float64 {
	if method == readDirect {
		// Direct gets, with or without the index.
		return f.reads(t, readIndex) + metricValue(t, f.reg, "roomcast_sync_reads_total", map[string]string{"method": readDirect})
	}
	return metricValue(t, f.reg, "roomcast_sync_reads_total", map[string]string{"method": method})
}

// TestChangesReadThroughDirectGets checks that, once the service has seen the
// stream allows direct gets, requests are answered with batched direct gets
// (no consumer), across several batches, with the same answers as ever.
func TestChangesReadThroughDirectGets(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, nil)
	tasks := room(t, "board-b1-tasks")
	now := time.Now().UnixMilli()
	// More than two batches (chunk), interleaved with another room.
	n := 2*chunk + 100
	var futures []jetstream.PubAckFuture
	publish := func(r proto.Room, env proto.Envelope) {
		data, id, err := f.pub.Encode(r, env)
		require.NoError(t, err)
		msg := nats.NewMsg(f.cfg.Store.Subjects.Publish(r))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, id)
		fut, err := f.js.PublishMsgAsync(msg)
		require.NoError(t, err)
		futures = append(futures, fut)
	}
	for i := range n {
		publish(tasks, update(fmt.Sprintf("t%d", i%7), now+int64(i), `{"n":1}`))
		publish(room(t, "board-b2-tasks"), create(fmt.Sprintf("x%d", i), now))
	}
	var lastSeq uint64
	for _, fut := range futures {
		select {
		case ack := <-fut.Ok():
			lastSeq = max(lastSeq, ack.Sequence)
		case err := <-fut.Err():
			require.NoError(t, err)
		}
	}
	consumers := f.reads(t, readConsumer)
	direct := f.reads(t, readDirect)

	// Pages of at most 1,001 messages (limit + 1), followed as a client
	// does: the later change of a resource replaces the earlier.
	res := f.allChanges(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0), Limit: 1000})
	require.True(t, res.Complete)
	require.Len(t, res.Changes, 7)
	// The latest change of each resource: the last 7 updates, in stream order.
	for i, c := range res.Changes {
		require.Equal(t, fmt.Sprintf("t%d", (n-7+i)%7), c.ID)
		require.Equal(t, now+int64(n-7+i), c.UpdatedAt)
	}
	require.Equal(t, lastSeq-1, res.Changes[6].Seq, "the room's last message is the one before the other room's last")

	// By time, from before the stream: the same.
	res = f.allChanges(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorSince(now), Limit: 1000})
	require.Len(t, res.Changes, 7)
	require.True(t, res.Complete)

	// A chat read over several batches keeps every message, in order.
	chat := room(t, "chat-a-b")
	futures = futures[:0]
	for i := range n {
		publish(chat, message(fmt.Sprintf("m%d", i), now+int64(i)))
	}
	for _, fut := range futures {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			require.NoError(t, err)
		}
	}
	var got []string
	cur := cursorAfter(0)
	for page := 0; ; page++ {
		require.Less(t, page, 10)
		r := f.chat(t, proto.ChatArgs{RoomName: chat.Name(), Cursor: cur, Limit: 1000})
		for _, m := range r.Messages {
			env, err := proto.ParseEnvelope(m)
			require.NoError(t, err)
			got = append(got, env.ID)
		}
		if !r.HasMore {
			break
		}
		cur = *r.Next
	}
	require.Len(t, got, n)
	for i, id := range got {
		require.Equal(t, fmt.Sprintf("m%d", i), id)
	}

	require.Equal(t, consumers, f.reads(t, readConsumer), "no consumer was created")
	require.Greater(t, f.reads(t, readDirect), direct)
}

// TestDirectGetHeadersNotSpoofed stores messages carrying the headers a
// direct get reply is read by: the service must read the server's values
// (appended after the stored ones), not the publisher's.
func TestDirectGetHeadersNotSpoofed(t *testing.T) {
	// No tail: the reads are direct gets (the feed's index reads the
	// server's values too, TestIndexLookup).
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.TailMessages = -1 })
	tasks := room(t, "board-b1-tasks")
	now := time.Now().UnixMilli()
	var seqs []uint64
	for i := range 3 {
		data, _, err := f.pub.Encode(tasks, create(fmt.Sprintf("t%d", i), now))
		require.NoError(t, err)
		msg := nats.NewMsg(f.cfg.Store.Subjects.Publish(tasks))
		msg.Data = data
		msg.Header.Set(jetstream.SequenceHeader, "1")
		msg.Header.Set(jetstream.LastSequenceHeader, "77")
		msg.Header.Set(directget.HeaderNumPending, "0")
		ack, err := f.js.PublishMsg(context.Background(), msg)
		require.NoError(t, err)
		seqs = append(seqs, ack.Sequence)
	}
	direct := f.reads(t, readDirect)
	res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0), Limit: 2})
	require.Equal(t, []string{"t0", "t1"}, ids(res.Changes))
	require.Equal(t, seqs[:2], []uint64{res.Changes[0].Seq, res.Changes[1].Seq})
	require.NotNil(t, res.Next)
	require.Equal(t, seqs[1], *res.Next.AfterSeq)
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: *res.Next})
	require.Equal(t, []string{"t2"}, ids(res.Changes))
	require.Equal(t, seqs[2], res.Changes[0].Seq)
	require.Nil(t, res.Next)
	require.Equal(t, direct+2, f.reads(t, readDirect))
}

// TestConsumerReadWithoutDirectGets turns AllowDirect off: the request that
// finds no responder falls back to a consumer, the following ones read
// through consumers from the start, and turning it back on returns to direct
// gets.
func TestConsumerReadWithoutDirectGets(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.TailMessages = -1 })
	tasks := room(t, "board-b1-tasks")
	now := time.Now().UnixMilli()
	f.publish(t, tasks, create("t1", now))
	f.publish(t, tasks, create("t2", now+1))
	setDirect := func(on bool) {
		ctx := context.Background()
		st, err := f.js.Stream(ctx, proto.StreamRooms)
		require.NoError(t, err)
		cfg := st.CachedInfo().Config
		cfg.AllowDirect = on
		_, err = f.js.UpdateStream(ctx, cfg)
		require.NoError(t, err)
	}
	ask := func() {
		t.Helper()
		res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0)})
		require.Equal(t, []string{"t1", "t2"}, ids(res.Changes))
		require.True(t, res.Complete)
	}

	setDirect(false)
	consumers, direct := f.reads(t, readConsumer), f.reads(t, readDirect)
	ask() // tries a direct get, no responder: falls back
	require.Equal(t, direct+1, f.reads(t, readDirect))
	require.Equal(t, consumers+1, f.reads(t, readConsumer))
	ask()
	require.Equal(t, direct+1, f.reads(t, readDirect), "no more direct gets once the stream said no")
	require.Equal(t, consumers+2, f.reads(t, readConsumer))

	setDirect(true)
	ask() // the stream info after this read says direct gets are back
	ask()
	require.Equal(t, direct+2, f.reads(t, readDirect))
	require.Equal(t, consumers+3, f.reads(t, readConsumer))
}
