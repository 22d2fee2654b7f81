package backfill

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func TestPlan(t *testing.T) {
	seqs := []uint64{100, 101, 102, 140, 141, 141 + walkGap, 141 + 2*walkGap + 1}
	for _, tc := range []struct {
		name    string
		newest  uint64
		batched bool
		want    []run
	}{
		{"near the end", 200, true, []run{{0, 3}, {3, 3}, {6, 1}}},
		{"not batched (replicated)", 200, false, []run{{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {6, 1}}},
		{"too far from the end to batch", 100 + walkReach + 1, true, []run{{0, 1}, {1, 2}, {3, 3}, {6, 1}}},
		{"the index has not seen the stream's end", 0, true, []run{{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {6, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, plan(entries(seqs), tc.newest, tc.batched))
		})
	}
	long := make([]uint64, chunk+3)
	for i := range long {
		long[i] = uint64(i + 1)
	}
	require.Equal(t, []run{{0, chunk}, {chunk, 3}}, plan(entries(long), uint64(len(long)), true), "a run is at most a chunk")
}

// entries are index entries of seqs (no store times).
func entries(seqs []uint64) []indexEntry {
	es := make([]indexEntry, len(seqs))
	for i, s := range seqs {
		es[i].seq = s
	}
	return es
}

// directGets records the direct get requests made on stream ROOMS (core
// NATS delivers them to this subscriber too; it never answers).
type directGets struct {
	mu   sync.Mutex
	reqs []string
}

func watchDirectGets(t *testing.T, nc *nats.Conn) *directGets {
	t.Helper()
	g := &directGets{}
	sub, err := nc.Subscribe(proto.DirectGetSubject(proto.StreamRooms), func(m *nats.Msg) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.reqs = append(g.reqs, string(m.Data))
	})
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return g
}

func (g *directGets) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reqs = nil
}

// count says how many requests were made, and how many of them were batched
// reads of the index's sequences (no headers, a batch).
func (g *directGets) count() (all, batched int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range g.reqs {
		if strings.Contains(r, `"no_hdr":true`) && strings.Contains(r, `"batch":`) {
			batched++
		}
	}
	return len(g.reqs), batched
}

// publishBursts publishes room a's 60 changes a00…a59 in two bursts, with
// more than walkGap other messages between them and around them, and returns
// their sequences.
func publishBursts(t *testing.T, f *fixture, now int64) []uint64 {
	t.Helper()
	a, b := room(t, "board-a-tasks"), room(t, "board-b-tasks")
	f.publish(t, b, create("b0", now))
	var seqs []uint64
	for i := range 60 {
		if i == 40 {
			for k := range walkGap + 8 {
				f.publish(t, b, create(fmt.Sprintf("b%d", k+1), now))
			}
		}
		seqs = append(seqs, f.publish(t, a, create(fmt.Sprintf("a%02d", i), now+int64(i))))
	}
	f.publish(t, b, create("b-last", now))
	return seqs
}

func names(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("a%02d", i))
	}
	return out
}

// TestBatchedIndexReads reads a room whose messages come in bursts: the
// index's sequences are fetched with one batched direct get per burst, and
// the answers are exactly the room's changes (none missing, none extra,
// none repeated across pages) whatever the cursor, limit or byte cap, and
// when messages were removed under the index.
func TestBatchedIndexReads(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.TailMessages = -1 })
	a := room(t, "board-a-tasks")
	gets := watchDirectGets(t, f.nc)
	now := time.Now().UnixMilli()
	seqs := publishBursts(t, f, now)
	all := names(0, 60)

	// Once the index has seen both bursts: two batched gets and the request
	// for anything newer than the index, nothing else.
	var res proto.ChangesResult
	require.Eventually(t, func() bool {
		gets.reset()
		res = f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(0)})
		n, batched := gets.count()
		return n == 3 && batched == 2
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, all, ids(res.Changes))
	requireSeqs(t, seqs, res.Changes)
	require.True(t, res.Complete)
	require.Nil(t, res.Next, "fewer changes than the limit: nothing cut")

	// Cursors inside a burst, and by time.
	require.Equal(t, names(11, 60), ids(f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(seqs[10])}).Changes))
	require.Equal(t, names(40, 60), ids(f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(seqs[39])}).Changes))
	require.Empty(t, f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(seqs[59])}).Changes)
	require.Equal(t, names(45, 60), ids(f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorSince(now + 45)}).Changes))

	// Pages of 25 across both bursts: neither skip nor repeat.
	require.Equal(t, all, follow(t, f, a, cursorAfter(0), 25, 25))

	// A message removed from the middle of a burst: the batch no longer
	// matches the index and the read walks instead, without it.
	stream, err := f.js.Stream(context.Background(), proto.StreamRooms)
	require.NoError(t, err)
	require.NoError(t, stream.DeleteMsg(context.Background(), seqs[5]))
	res = f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(0)})
	require.Equal(t, append(names(0, 5), names(6, 60)...), ids(res.Changes))
	requireSeqs(t, seqs, res.Changes)
	require.True(t, res.Complete)

	// The stream's beginning removed up to the middle of the first burst:
	// what is left is reported, and the answer says history is incomplete.
	require.NoError(t, stream.Purge(context.Background(), jetstream.WithPurgeSequence(seqs[20])))
	res = f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(0)})
	require.Equal(t, names(20, 60), ids(res.Changes))
	requireSeqs(t, seqs, res.Changes)
	require.False(t, res.Complete)
	res = f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(seqs[19])})
	require.Equal(t, names(20, 60), ids(res.Changes))
	require.True(t, res.Complete)
}

// TestBatchedIndexReadsByteCap reads bursts with a byte cap of a few
// messages per request: each answer is cut (with next) and the pages
// together are every change once.
func TestBatchedIndexReadsByteCap(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.MaxBytes, c.TailMessages = 300, -1 })
	a := room(t, "board-a-tasks")
	gets := watchDirectGets(t, f.nc)
	now := time.Now().UnixMilli()
	publishBursts(t, f, now)
	require.Eventually(t, func() bool {
		gets.reset()
		f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(0)})
		// Both bursts' batches and the request for newer messages are sent
		// at once (pipelined); the first batch reaches the cap.
		n, batched := gets.count()
		return n == 3 && batched == 2
	}, 5*time.Second, 10*time.Millisecond)
	// About 100 bytes per stored message: 3 or 4 per page (the cap is
	// reached after a message).
	require.Equal(t, names(0, 60), follow(t, f, a, cursorAfter(0), 100, 4))
	require.Positive(t, metricValue(t, f.reg, "roomcast_sync_cut_total", map[string]string{"endpoint": endpointChanges, "reason": string(cutBytes)}))
}

// follow reads room's changes from cur page by page (limit), checking each
// page holds at most most entries, and returns them all.
func follow(t *testing.T, f *fixture, r proto.Room, cur proto.Cursor, limit, most int) []string {
	t.Helper()
	var got []string
	for page := 0; ; page++ {
		require.Less(t, page, 100)
		res := f.changes(t, proto.ChangesArgs{RoomName: r.Name(), Cursor: cur, Limit: limit})
		require.LessOrEqual(t, len(res.Changes), most)
		require.True(t, res.Complete)
		got = append(got, ids(res.Changes)...)
		if res.Next == nil {
			return got
		}
		require.NotEmpty(t, res.Changes, "a cut page makes progress")
		cur = *res.Next
	}
}

// requireSeqs checks each change a<N> carries seqs[N], the sequence it was
// stored at.
func requireSeqs(t *testing.T, seqs []uint64, changes []proto.Change) {
	t.Helper()
	for _, c := range changes {
		var n int
		_, err := fmt.Sscanf(c.ID, "a%d", &n)
		require.NoError(t, err)
		require.Equal(t, seqs[n], c.Seq, c.ID)
	}
}

// TestReadSeqsAsksForNewer gives readSeqs an index that lags the stream (it
// knows a00…a29 of a00…a59): the request for newer messages, sent with the
// index's, reads the rest, in one batch or, when a page is small, several.
func TestReadSeqsAsksForNewer(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.TailMessages = -1 })
	seqs := publishBursts(t, f, time.Now().UnixMilli())
	r := indexReader{walk: newWalkReader(f.nc, proto.StreamRooms)}
	subject := f.cfg.Store.Subjects.Publish(room(t, "board-a-tasks"))
	for _, want := range []int{100, 5} {
		b := budget{maxScan: 10_000, maxBytes: 1 << 20, deadline: time.Now().Add(10 * time.Second)}
		var got []uint64
		known := indexed{entries: entries(seqs[:30]), tail: seqs[29], newest: seqs[59]}
		res, err := r.readSeqs(context.Background(), readRequest{subject: subject, budget: b, want: want}, known, func(m stored) bool {
			got = append(got, m.Seq)
			return true
		})
		require.NoError(t, err)
		require.Equal(t, cutNone, res.cut)
		require.True(t, res.toEnd, "want %d: the newer messages were read", want)
		require.Equal(t, seqs, got, "want %d", want)
		require.Equal(t, 60, res.scanned)
	}
}
