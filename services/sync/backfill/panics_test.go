package backfill

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// armed panics where it is armed, as many times as armed.
type armed struct{ feed, admit, changes, chat atomic.Int32 }

func (a *armed) hook(where string) {
	n := map[string]*atomic.Int32{"feed": &a.feed, "admit": &a.admit, endpointChanges: &a.changes, endpointChat: &a.chat}[where]
	for n != nil {
		v := n.Load()
		if v <= 0 {
			return
		}
		if n.CompareAndSwap(v, v-1) {
			panic("injected at " + where)
		}
	}
}

// TestPanicsStopAtBoundaries: a panic in the feed callback or in a request
// handler is stopped there and counted; the service serves the next
// message, and the panicking one is not half applied (the index that a
// panic may have left half updated is forgotten; a request is answered
// internal and frees its slot).
func TestPanicsStopAtBoundaries(t *testing.T) {
	var a armed
	f := startSync(t, proto.StoreConfig{}, func(c *Config) {
		c.panicHook = a.hook
		c.Concurrency = 2
	})
	panics := func(where string) float64 {
		return metricValue(t, f.reg, "roomcast_sync_panics_total", map[string]string{"where": where})
	}
	tasks := room(t, "board-p1-tasks")
	now := time.Now().UnixMilli()
	var seqs []uint64
	for i := range 3 {
		seqs = append(seqs, f.publish(t, tasks, create(fmt.Sprintf("t%d", i), now)))
	}
	// The tail answers once the feed has shown the room's messages.
	fromTail := func(after uint64, want []string) bool {
		tail := f.reads(t, readTail)
		res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(after)})
		require.Equal(t, want, ids(res.Changes))
		return f.reads(t, readTail) == tail+1
	}
	require.Eventually(t, func() bool { return fromTail(seqs[1], []string{"t2"}) }, 5*time.Second, 10*time.Millisecond)

	// The feed: a panic half-way through observing t3.
	a.feed.Store(1)
	seqs = append(seqs, f.publish(t, tasks, create("t3", now)))
	require.Eventually(t, func() bool { return panics("feed") == 1 }, 5*time.Second, 10*time.Millisecond)
	// Not half applied: the index forgot every room, so the read goes to
	// the stream, which has t3.
	require.False(t, fromTail(seqs[2], []string{"t3"}), "the index was reset")
	// The feed serves on: t4 is learnt, and the tail answers again (with
	// t3's chain left half updated instead of forgotten, it never would).
	seqs = append(seqs, f.publish(t, tasks, create("t4", now)))
	require.Eventually(t, func() bool { return fromTail(seqs[3], []string{"t4"}) }, 5*time.Second, 10*time.Millisecond)

	// The handlers: more panics than slots (Concurrency 2), each answered
	// internal at once, none holding its slot.
	for _, ep := range []struct {
		name, subject string
		n             *atomic.Int32
		args          any
	}{
		{endpointChanges, proto.SubjectSyncChanges, &a.changes, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0)}},
		{endpointChat, proto.SubjectSyncChat, &a.chat, proto.ChatArgs{RoomName: "chat-a-b", Cursor: cursorAfter(0)}},
	} {
		ep.n.Store(3)
		for range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := proto.Request(ctx, f.nc, ep.subject, ep.args, nil)
			cancel()
			var pe *proto.Error
			require.True(t, errors.As(err, &pe), "%v", err)
			require.Equal(t, proto.CodeInternal, pe.Code, ep.name)
		}
		require.Equal(t, 3.0, panics(ep.name))
		// Counted once the reply is sent.
		require.Eventually(t, func() bool {
			return metricValue(t, f.reg, "roomcast_sync_requests_total", map[string]string{"endpoint": ep.name, "code": string(proto.CodeInternal)}) == 3
		}, 5*time.Second, 10*time.Millisecond)
	}
	// Admission (the micro handler itself, before the read): the same.
	a.admit.Store(2)
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := proto.Request(ctx, f.nc, proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0)}, nil)
		cancel()
		require.Equal(t, proto.CodeInternal, proto.CodeOf(err), "%v", err)
	}
	require.Equal(t, 5.0, panics(endpointChanges))
	res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0)})
	require.Equal(t, []string{"t0", "t1", "t2", "t3", "t4"}, ids(res.Changes))
	f.chat(t, proto.ChatArgs{RoomName: "chat-a-b", Cursor: cursorAfter(0)})
}
