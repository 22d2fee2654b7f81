package backfill

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// BenchmarkChanges measures one sync.changes request, end to end over NATS
// (request, consumer, reads, stream info, reply), for rooms with 10, 100 and
// 1,000 changes spread through a stream of other rooms' messages (1,000
// rooms). The stream size is $ROOMCAST_SYNC_BENCH_STREAM, default 100,000 so
// `make bench` stays quick; the figure is with 1,000,000:
//
//	ROOMCAST_SYNC_BENCH_STREAM=1000000 go test -run '^$' -bench Changes ./backfill
func BenchmarkChanges(b *testing.B) {
	total := 100_000
	if v := os.Getenv("ROOMCAST_SYNC_BENCH_STREAM"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(b, err)
		total = n
	}
	sizes := []int{10, 100, 1000}
	// MaxTime is raised so the first, cold read (blocks loaded from disk) is
	// measured rather than cut.
	f := startSync(b, proto.StoreConfig{}, func(c *Config) { c.MaxLimit, c.MaxTime = 1000, time.Minute })
	subjects := f.cfg.Store.Subjects
	now := time.Now().UnixMilli()
	began := time.Now()

	// Each measured room's changes are spread evenly through the stream.
	rooms := make([]proto.Room, len(sizes))
	every := make([]int, len(sizes))
	for i, n := range sizes {
		rooms[i] = room(b, fmt.Sprintf("board-r%d-tasks", n))
		every[i] = max(1, total/n)
	}
	others := make([]proto.Room, 1000)
	for i := range others {
		others[i] = room(b, fmt.Sprintf("board-o%d-tasks", i))
	}
	futures := make([]jetstream.PubAckFuture, 0, 4096)
	wait := func() {
		for _, fut := range futures {
			select {
			case <-fut.Ok():
			case err := <-fut.Err():
				require.NoError(b, err)
			}
		}
		futures = futures[:0]
	}
	published := make([]int, len(sizes))
	for i := 0; i < total; i++ {
		futures = append(futures, publishAsync(b, f, subjects, others[i%len(others)], update(fmt.Sprintf("x%d", i), now, `{"n":1}`)))
		for k, n := range sizes {
			if i%every[k] == 0 && published[k] < n {
				id := fmt.Sprintf("t%d", published[k]%100) // collapses to ≤ 100 resources
				futures = append(futures, publishAsync(b, f, subjects, rooms[k], update(id, now+int64(i), `{"n":1}`)))
				published[k]++
			}
		}
		if len(futures) >= 4000 {
			wait()
		}
	}
	wait()
	b.Logf("stream: %d other messages, published in %s", total, time.Since(began).Round(time.Millisecond))

	// The first reads after publishing find the blocks on disk, not cached.
	for k, n := range sizes {
		t0 := time.Now()
		var res proto.ChangesResult
		require.NoError(b, f.request(proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: rooms[k].Name(), Cursor: cursorAfter(0), Limit: 1000}, &res))
		b.Logf("first read of room=%d: %s (%d changes, next %v)", n, time.Since(t0).Round(time.Microsecond), len(res.Changes), res.Next != nil)
	}
	for k, n := range sizes {
		for _, mode := range []string{"afterSeq", "since"} {
			cur := cursorAfter(0)
			if mode == "since" {
				cur = cursorSince(now)
			}
			b.Run(fmt.Sprintf("stream=%d/room=%d/%s", total, n, mode), func(b *testing.B) {
				args := proto.ChangesArgs{RoomName: rooms[k].Name(), Cursor: cur, Limit: 1000}
				for b.Loop() {
					var res proto.ChangesResult
					if err := f.request(proto.SubjectSyncChanges, args, &res); err != nil {
						b.Fatal(err)
					}
					if res.Next != nil || len(res.Changes) != min(n, 100) {
						b.Fatalf("got %d changes, next %v", len(res.Changes), res.Next)
					}
				}
			})
		}
	}
}

// publishAsync stores env in room without waiting for its ack.
func publishAsync(b testing.TB, f *fixture, subjects proto.Subjects, room proto.Room, env proto.Envelope) jetstream.PubAckFuture {
	data, id, err := f.pub.Encode(room, env)
	require.NoError(b, err)
	msg := nats.NewMsg(subjects.Publish(room))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	fut, err := f.js.PublishMsgAsync(msg, jetstream.WithStallWait(30*time.Second))
	require.NoError(b, err)
	return fut
}
