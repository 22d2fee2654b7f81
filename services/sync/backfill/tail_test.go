package backfill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

// body is a stored body for the unit tests: the sequence, recognisable.
func body(seq uint64) []byte {
	return []byte(fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, seq, strings.Repeat("x", int(seq%7))))
}

// tailSeqs reads subject after afterSeq from x's tail, the stream holding
// first..last with no interior removal; nil, false when the tail cannot
// answer. Every body must be the one observed.
func tailSeqs(t *testing.T, x *index, subject string, afterSeq, first, last uint64) ([]uint64, bool) {
	t.Helper()
	msgs, ok := x.tailRead(subject, start{afterSeq: afterSeq}, jetstream.StreamState{FirstSeq: first, LastSeq: last, Msgs: last - first + 1}, 0)
	if !ok {
		return nil, false
	}
	var seqs []uint64
	for _, m := range msgs {
		require.Equal(t, string(body(m.Seq)), string(m.Data))
		seqs = append(seqs, m.Seq)
	}
	return seqs, true
}

func TestTailBodies(t *testing.T) {
	x := newIndex(6, 8, 4, 1<<20)
	feed := func(subject string, seq, prev uint64) {
		x.observe(feedMsg(subject, seq, prev, int(seq)), body(seq))
	}
	// a: 1, 3, 5, 7, 9, 11 (every other sequence); b the rest.
	var prevA, prevB uint64
	for seq := uint64(1); seq <= 12; seq++ {
		if seq%2 == 1 {
			feed("a", seq, prevA)
			prevA = seq
		} else {
			feed("b", seq, prevB)
			prevB = seq
		}
	}
	// The tail keeps a's last 4 bodies (5, 7, 9, 11) of its 6 entries.
	seqs, ok := tailSeqs(t, x, "a", 3, 1, 12)
	require.True(t, ok)
	require.Equal(t, []uint64{5, 7, 9, 11}, seqs)
	seqs, ok = tailSeqs(t, x, "a", 8, 1, 12)
	require.True(t, ok)
	require.Equal(t, []uint64{9, 11}, seqs)
	seqs, ok = tailSeqs(t, x, "a", 11, 1, 12)
	require.True(t, ok)
	require.Empty(t, seqs)
	_, ok = tailSeqs(t, x, "a", 1, 1, 12)
	require.False(t, ok, "the body of 3 is not kept")
	// The answer is the stream's at the state given: newer entries left
	// out, removed ones (below the first sequence) skipped.
	seqs, ok = tailSeqs(t, x, "a", 3, 1, 10)
	require.True(t, ok)
	require.Equal(t, []uint64{5, 7, 9}, seqs)
	seqs, ok = tailSeqs(t, x, "a", 3, 8, 12)
	require.True(t, ok)
	require.Equal(t, []uint64{9, 11}, seqs)
	// The feed has not shown the stream's last sequence: no answer.
	_, ok = tailSeqs(t, x, "a", 3, 1, 13)
	require.False(t, ok)
	// A possibly deleted entry (at or below the barrier): no answer.
	_, ok = x.tailRead("a", start{afterSeq: 3}, jetstream.StreamState{FirstSeq: 1, LastSeq: 12, Msgs: 11}, 5)
	require.False(t, ok)
	_, ok = x.tailRead("a", start{afterSeq: 5}, jetstream.StreamState{FirstSeq: 1, LastSeq: 12, Msgs: 11}, 5)
	require.True(t, ok, "entries above the barrier are still stored")

	// Many more messages: the log is compacted, the bodies stay right.
	for seq := uint64(13); seq <= 400; seq++ {
		feed("a", seq, seq-1)
	}
	seqs, ok = tailSeqs(t, x, "a", 396, 1, 400)
	require.True(t, ok)
	require.Equal(t, []uint64{397, 398, 399, 400}, seqs)
	require.LessOrEqual(t, x.rooms["a"].logCap(), 4*len(body(400))*4)

	// A body too large ends the tail there.
	x.observe(feedMsg("a", 401, 400, 401), make([]byte, tailMaxMessage+1))
	_, ok = tailSeqs(t, x, "a", 399, 1, 401)
	require.False(t, ok)
	feed("a", 402, 401)
	seqs, ok = tailSeqs(t, x, "a", 401, 1, 402)
	require.True(t, ok)
	require.Equal(t, []uint64{402}, seqs)

	// A message of the room the feed dropped restarts its chain and tail.
	feed("a", 404, 403)
	_, ok = tailSeqs(t, x, "a", 401, 1, 404)
	require.False(t, ok)
	seqs, ok = tailSeqs(t, x, "a", 403, 1, 404)
	require.True(t, ok)
	require.Equal(t, []uint64{404}, seqs)

	// A delivery the feed dropped (405, whichever room it was) leaves every
	// room whose last entry is older unable to say it has nothing newer.
	require.Equal(t, uint64(1), x.feedGaps(), "403 was never delivered")
	feed("c", 406, 0)
	require.Equal(t, uint64(2), x.feedGaps())
	_, ok = tailSeqs(t, x, "a", 403, 1, 406)
	require.False(t, ok, "405 may have been a's")
	_, ok = tailSeqs(t, x, "b", 10, 1, 406)
	require.False(t, ok)
	seqs, ok = tailSeqs(t, x, "c", 0, 1, 406)
	require.True(t, ok)
	require.Equal(t, []uint64{406}, seqs)
	feed("a", 407, 404)
	seqs, ok = tailSeqs(t, x, "a", 403, 1, 407)
	require.True(t, ok, "a's chain goes on past the dropped delivery")
	require.Equal(t, []uint64{404, 407}, seqs)
}

// sizedBody is a body of n bytes (at least the prefix's) that names seq.
func sizedBody(seq uint64, n int) []byte {
	b := fmt.Appendf(nil, "%d:", seq)
	if len(b) >= n {
		return b
	}
	b = append(b, make([]byte, n-len(b))...)
	b[len(b)-1] = byte('a' + seq%26) // the last byte names seq too
	return b
}

// logUniform draws a body size from lo to hi bytes, each power of two
// alike: small and large bodies mixed in one room, as real rooms are.
func logUniform(rng *rand.Rand, lo, hi int) int {
	return int(math.Exp(math.Log(float64(lo)) + rng.Float64()*(math.Log(float64(hi))-math.Log(float64(lo)))))
}

// TestTailBodySizes: one room fed bodies of varying sizes keeps the right
// bodies through every compaction. Before the fix, a compaction right after
// another one moved the wrong bytes: bodies of 50-130 bytes panicked in
// index.observe within a few thousand messages.
func TestTailBodySizes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		depth, keep int
		lo, hi      int
		logUniform  bool
	}{
		{"keep4/50-130", 6, 4, 50, 130, false},
		{"keep128/50-130", DefaultIndexDepth, DefaultTailMessages, 50, 130, false},
		{"keep4/1-8K", 6, 4, 1, 8 << 10, true},
		{"keep128/1-8K", DefaultIndexDepth, DefaultTailMessages, 1, 8 << 10, true},
		{"keep16/1-32K", 32, 16, 1, 2 * tailMaxMessage, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(0, 1))
			x := newIndex(tc.depth, 8, tc.keep, 1<<30)
			bodies := map[uint64][]byte{}
			for seq := uint64(1); seq <= 3000; seq++ {
				n := tc.lo + rng.IntN(tc.hi-tc.lo+1)
				if tc.logUniform {
					n = logUniform(rng, tc.lo, tc.hi)
				}
				data := sizedBody(seq, n)
				bodies[seq] = data
				x.observe(feedMsg("a", seq, seq-1, int(seq)), data)
				c := x.rooms["a"]
				_, _, ok := c.bodySpan(c.n-c.bodies, c.n)
				require.True(t, ok, "seq %d: the kept bodies' lengths do not add up to the log", seq)
				// The whole tail: every body kept must be right.
				after := seq - min(seq, uint64(tc.keep))
				msgs, ok := x.tailRead("a", start{afterSeq: after}, jetstream.StreamState{FirstSeq: 1, LastSeq: seq, Msgs: seq}, 0)
				if !ok {
					// Only a body too large to keep ends the tail.
					large := false
					for s := after + 1; s <= seq; s++ {
						large = large || len(bodies[s]) > tailMaxMessage
					}
					require.True(t, large, "seq %d: no tail answer after %d", seq, after)
					continue
				}
				require.Len(t, msgs, int(seq-after), "seq %d", seq)
				for i, m := range msgs {
					require.Equal(t, after+1+uint64(i), m.Seq)
					require.Equal(t, string(bodies[m.Seq]), string(m.Data), "seq %d", m.Seq)
				}
			}
		})
	}
}

func TestTailBytesBound(t *testing.T) {
	x := newIndex(16, 100, 16, 4<<10)
	for seq := uint64(1); seq <= 2000; seq++ {
		x.observe(feedMsg(fmt.Sprintf("r%d", seq%20), seq, max(seq, 20)-20, int(seq)), body(seq))
		total := 0
		for _, c := range x.rooms {
			total += c.logCap()
		}
		require.Equal(t, total, x.tailBytes)
		require.LessOrEqual(t, x.tailBytes, 4<<10)
	}
	// Some rooms lost their bodies, the room written last kept its own.
	seqs, ok := tailSeqs(t, x, "r0", 1980, 1, 2000)
	require.True(t, ok)
	require.Equal(t, []uint64{2000}, seqs)
	x.reset()
	require.Zero(t, x.bytes())
}

func TestRemovals(t *testing.T) {
	state := func(first, last, msgs uint64) jetstream.StreamState {
		return jetstream.StreamState{FirstSeq: first, LastSeq: last, Msgs: msgs}
	}
	var r removals
	require.Zero(t, r.observe(state(1, 10, 10)), "nothing removed")
	require.Zero(t, r.observe(state(5, 10, 6)), "removed from the front only")
	require.Equal(t, uint64(12), r.observe(state(5, 12, 7)), "an interior delete: up to 12")
	require.Equal(t, uint64(12), r.observe(state(5, 20, 15)), "nothing removed since")
	require.Equal(t, uint64(12), r.observe(state(5, 11, 6)), "an older state, the same removals")
	require.Equal(t, uint64(21), r.observe(state(5, 21, 15)), "another delete")
	require.Equal(t, uint64(30), r.observe(state(6, 30, 23)), "the front moved: which were removed is not known")
	require.Zero(t, r.observe(state(31, 30, 0)), "purged: nothing left to be wrong about")
	r.reset()
	require.Equal(t, uint64(9), r.observe(state(1, 9, 8)))
}

// tailFixture is a stream and a sync service that can be stopped and
// started again, with what a test needs to compute the stream's answer.
type tailFixture struct {
	*fixture
	svc  *service // the running one
	url  string
	stop func()
	// tailMessages is the next start's Config.TailMessages.
	tailMessages int
	// reads of the services stopped before, by method
	readsBefore map[string]float64
}

// allReads is how many reads by method every service started so far made.
func (f *tailFixture) allReads(t *testing.T, method string) float64 {
	return f.readsBefore[method] + f.reads(t, method)
}

func startTailFixture(t *testing.T, tailMessages int) *tailFixture {
	t.Helper()
	s, nc, js := natstest.RunStack(t, proto.StoreConfig{})
	f := &tailFixture{fixture: &fixture{nc: nc, js: js, pub: proto.NewPublisher(js, proto.Subjects{})}, url: s.ClientURL(), tailMessages: tailMessages}
	f.start(t)
	t.Cleanup(func() { f.stop() })
	return f
}

// start starts the service (a new one: what it learnt before is gone).
func (f *tailFixture) start(t *testing.T) {
	t.Helper()
	f.reg = prometheus.NewRegistry()
	built := make(chan *service, 1)
	f.cfg = Config{NATSURL: f.url, Registry: f.reg, Logger: zerolog.New(io.Discard), TailMessages: f.tailMessages,
		serviceHook: func(s *service) { built <- s }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, f.cfg) }()
	f.stop = func() {
		if f.readsBefore == nil {
			f.readsBefore = map[string]float64{}
		}
		for _, m := range []string{readTail, readIndex, readDirect, readConsumer} {
			f.readsBefore[m] += f.reads(t, m)
		}
		cancel()
		require.NoError(t, <-done)
	}
	require.Eventually(t, func() bool {
		var res proto.ChangesResult
		select {
		case err := <-done:
			t.Fatalf("sync stopped: %v", err)
		default:
		}
		// A short timeout: a request that reached the stopped service's
		// draining subscription is never answered.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		return proto.Request(ctx, f.nc, proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-ready-tasks", Cursor: cursorAfter(0)}, &res) == nil
	}, 10*time.Second, 20*time.Millisecond)
	f.svc = <-built
}

// streamCopy is every message stream ROOMS holds, and its state.
type streamCopy struct {
	state jetstream.StreamState
	msgs  []*jetstream.RawStreamMsg
}

func (f *tailFixture) copyStream(t *testing.T) streamCopy {
	t.Helper()
	ctx := context.Background()
	stream, err := f.js.Stream(ctx, proto.StreamRooms)
	require.NoError(t, err)
	c := streamCopy{state: stream.CachedInfo().State}
	for seq := c.state.FirstSeq; seq <= c.state.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		c.msgs = append(c.msgs, m)
	}
	return c
}

// from is what a read of subject from st must visit: the room's messages
// from st on, in stream order.
func (c streamCopy) from(subject string, st start) []*jetstream.RawStreamMsg {
	var out []*jetstream.RawStreamMsg
	for _, m := range c.msgs {
		switch {
		case m.Subject != subject:
		case !st.byTime && m.Sequence <= st.afterSeq:
		case st.byTime && m.Time.Before(st.at):
		default:
			out = append(out, m)
		}
	}
	return out
}

// want is the answer the stream gives, computed from every message it
// holds: the room's records from the cursor, collapsed.
func (c streamCopy) want(t *testing.T, args proto.ChangesArgs) proto.ChangesResult {
	t.Helper()
	subject := proto.Subjects{}.Publish(room(t, args.RoomName))
	at := startOf(args.Cursor, DefaultSkewMargin)
	var records []record
	for _, m := range c.from(subject, at) {
		rec, err := parseRecord(room(t, args.RoomName), stored{Seq: m.Sequence, Data: m.Data, At: m.Time})
		require.NoError(t, err)
		records = append(records, rec)
	}
	changes, folded := collapse(records, args.Since, cmp(args.Limit, DefaultLimit))
	res := proto.ChangesResult{Changes: changes, Complete: reachesBack(at, c.state)}
	if folded < len(records) {
		next := records[folded-1].Seq
		res.Next = &proto.Cursor{AfterSeq: &next}
	}
	return res
}

func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// check asks the service and requires the stream's answer.
func (f *tailFixture) check(t *testing.T, c streamCopy, args proto.ChangesArgs) proto.ChangesResult {
	t.Helper()
	got := f.changes(t, args)
	want := c.want(t, args)
	if len(want.Changes) == 0 {
		want.Changes = got.Changes // nil and empty alike
	}
	if want.Next == nil && got.Next != nil {
		// A known imprecision of the index read (readSeqs): a batched run
		// whose last messages were removed, with nothing of the room after
		// them, stops early as a byte cap does, and the answer carries a
		// continuation cursor. Allowed only when it leads to nothing more.
		more := args
		more.Cursor = *got.Next
		rest := c.want(t, more)
		require.Empty(t, rest.Changes, "%+v: a cursor where the stream has more", args)
		require.Nil(t, rest.Next)
		want.Next = got.Next
	}
	require.Equal(t, want, got, "%+v", args)
	return got
}

// randomStream is a stream of random rooms that randomRounds fills.
type randomStream struct {
	rooms []proto.Room
	base  int64    // updatedAt of the first messages
	seqs  []uint64 // every sequence published
}

// randomRounds runs rounds of random messages to random rooms: bodies from
// ~50 bytes (a delete) to past what the tail keeps, log-uniform, mixed
// within each room, so compaction and the too-large path run at every size;
// between rounds a message is deleted, a room purged, the stream's front cut
// (as max age does) or the service restarted (the new one learns from the
// feed from then on, with a short tail of 8 or a long one of 64 in turn).
// After each round, check is given the stream as it is.
func (f *tailFixture) randomRounds(t *testing.T, rng *rand.Rand, rounds int, check func(rs *randomStream, c streamCopy)) {
	t.Helper()
	ctx := context.Background()
	rs := &randomStream{
		rooms: []proto.Room{room(t, "board-p0-tasks"), room(t, "board-p1-tasks"), room(t, "board-p2-tasks"), room(t, "org-p3")},
		base:  time.Now().UnixMilli(),
	}
	for round := range rounds {
		for range 20 + rng.IntN(60) {
			r := rs.rooms[rng.IntN(len(rs.rooms))]
			id := fmt.Sprintf("x%d", rng.IntN(6))
			at := rs.base + int64(rng.IntN(1000))
			var env proto.Envelope
			pad := strings.Repeat("p", logUniform(rng, 1, 3*tailMaxMessage/2))
			switch ev := rng.IntN(3); {
			case r.Kind() == proto.KindOrg:
				env = proto.Envelope{Event: proto.EventUpdateOrganization, ID: id, UpdatedAt: at, Diff: []byte(`{"n":1,"pad":"` + pad + `"}`)}
			case ev == 0:
				env = create(id, at)
				env.Data = json.RawMessage(`{"id":"` + id + `","title":"` + pad + `"}`)
			case ev == 1:
				env = update(id, at, fmt.Sprintf(`{"n":%d,"pad":"%s"}`, rng.IntN(100), pad))
			default:
				env = remove(id, at)
			}
			rs.seqs = append(rs.seqs, f.publish(t, r, env))
		}
		stream, err := f.js.Stream(ctx, proto.StreamRooms)
		require.NoError(t, err)
		switch round % 6 {
		case 1: // a message deleted
			_ = stream.DeleteMsg(ctx, rs.seqs[rng.IntN(len(rs.seqs))])
		case 3: // a room purged
			require.NoError(t, stream.Purge(ctx, jetstream.WithPurgeSubject(proto.Subjects{}.Publish(rs.rooms[rng.IntN(len(rs.rooms))]))))
		case 4: // the front cut (as max age does)
			require.NoError(t, stream.Purge(ctx, jetstream.WithPurgeSequence(rs.seqs[len(rs.seqs)/3])))
		case 5: // a restart
			f.stop()
			f.tailMessages = 8 + 64 - f.tailMessages
			f.start(t)
		}
		check(rs, f.copyStream(t))
	}
}

// cursor is a random cursor: mostly recent (as resyncs are), sometimes a
// since.
func (rs *randomStream) cursor(rng *rand.Rand) proto.Cursor {
	if rng.IntN(5) == 0 {
		return cursorSince(rs.base + int64(rng.IntN(1000)))
	}
	last := rs.seqs[len(rs.seqs)-1]
	return cursorAfter(last - min(last, uint64(rng.IntN(120))))
}

// TestTailMatchesStream: on random streams of random rooms (randomRounds:
// bodies of every size, messages deleted, rooms purged, the stream's front
// cut and the service restarted between rounds), every answer equals the
// stream's, whether the tail gave it or not.
func TestTailMatchesStream(t *testing.T) {
	f := startTailFixture(t, 8)
	rng := rand.New(rand.NewPCG(8, 2026))
	f.randomRounds(t, rng, 12, func(rs *randomStream, c streamCopy) {
		for range 30 {
			args := proto.ChangesArgs{RoomName: rs.rooms[rng.IntN(len(rs.rooms))].Name(), Limit: []int{0, 1, 3, 100}[rng.IntN(4)], Cursor: rs.cursor(rng)}
			res := f.check(t, c, args)
			for page := 0; res.Next != nil; page++ {
				require.Less(t, page, 200)
				args.Cursor = *res.Next
				res = f.check(t, c, args)
			}
		}
	})
	tail, others := f.allReads(t, readTail), f.allReads(t, readIndex)+f.allReads(t, readDirect)
	t.Logf("reads: tail %.0f, stream %.0f", tail, others)
	require.Positive(t, tail)
	require.Positive(t, others)
}

// TestTailFallsBack: each way the tail cannot be sure sends the read to the
// stream, with the stream's answer; and the tail answers again once sure.
func TestTailFallsBack(t *testing.T) {
	f := startTailFixture(t, 64)
	ctx := context.Background()
	tasks := room(t, "board-f1-tasks")
	now := time.Now().UnixMilli()
	// Another room's message first: purging tasks then removes messages
	// in the middle of the stream, not at its front.
	f.publish(t, room(t, "board-f2-tasks"), create("o", now))
	var seqs []uint64
	for i := range 6 {
		seqs = append(seqs, f.publish(t, tasks, create(fmt.Sprintf("t%d", i), now)))
	}
	ask := func(after uint64, wantIDs []string, fromTail bool) proto.ChangesResult {
		t.Helper()
		tail := f.reads(t, readTail)
		res := f.check(t, f.copyStream(t), proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(after)})
		require.Equal(t, wantIDs, ids(res.Changes))
		if fromTail {
			require.Equal(t, tail+1, f.reads(t, readTail), "from the tail")
		} else {
			require.Equal(t, tail, f.reads(t, readTail), "not from the tail")
		}
		return res
	}
	ask(0, []string{"t0", "t1", "t2", "t3", "t4", "t5"}, true)

	// A deleted message: the tail no longer answers for what was stored
	// before the delete was seen.
	stream, err := f.js.Stream(ctx, proto.StreamRooms)
	require.NoError(t, err)
	require.NoError(t, stream.DeleteMsg(ctx, seqs[2]))
	ask(0, []string{"t0", "t1", "t3", "t4", "t5"}, false)
	seqs = append(seqs, f.publish(t, tasks, create("t6", now)))
	ask(seqs[5], []string{"t6"}, true)
	ask(seqs[4], []string{"t5", "t6"}, false)

	// A restart: the new service has not seen the room's earlier messages.
	f.stop()
	f.start(t)
	ask(seqs[5], []string{"t6"}, false)
	seqs = append(seqs, f.publish(t, tasks, create("t7", now)))
	ask(seqs[6], []string{"t7"}, true)

	// The room purged: nothing left, complete.
	require.NoError(t, stream.Purge(ctx, jetstream.WithPurgeSubject(proto.Subjects{}.Publish(tasks))))
	res := ask(seqs[6], []string{}, false)
	require.True(t, res.Complete)

	// The front cut (max age): what is left is reported, incomplete; the
	// tail answers it (no interior removal left).
	for i := 8; i < 12; i++ {
		seqs = append(seqs, f.publish(t, tasks, create(fmt.Sprintf("t%d", i), now)))
	}
	require.NoError(t, stream.Purge(ctx, jetstream.WithPurgeSequence(seqs[10])))
	res = ask(seqs[8], []string{"t10", "t11"}, true)
	require.False(t, res.Complete)
}

// BenchmarkTailObserve is the feed's cost per message and the memory of the
// index and tail after b.N messages round-robin over 1,000 rooms, bodies
// like bench resync's (~120 bytes), with the tail (keep 128) and without:
// `go test -run '^$' -bench TailObserve -benchtime 1000000x`.
func BenchmarkTailObserve(b *testing.B) {
	for _, keep := range []int{128, 0} {
		b.Run(fmt.Sprintf("keep=%d", keep), func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			x := newIndex(DefaultIndexDepth, DefaultIndexRooms, keep, DefaultTailBytes)
			subjects := make([]string, 1000)
			for i := range subjects {
				subjects[i] = fmt.Sprintf("rooms.board.b%d.tasks", i)
			}
			h := feedMsg(subjects[0], 1, 0, 1)
			stamp := time.Unix(1764288000, 0).UTC().Format(time.RFC3339Nano)
			h.Set(jetstream.TimeStampHeaer, stamp)
			data := []byte(`{"event":"update-task","id":"t1_000000","updatedAt":1764288000000,"diff":{"ts":1764288000000000000,"step":0}}`)
			b.ResetTimer()
			for i := range b.N {
				seq := uint64(i + 1)
				prev := uint64(0)
				if seq > 1000 {
					prev = seq - 1000
				}
				h[jetstream.SubjectHeader][0] = subjects[i%1000]
				h[jetstream.SequenceHeader][0] = strconv.FormatUint(seq, 10)
				h[jetstream.LastSequenceHeader][0] = strconv.FormatUint(prev, 10)
				x.observe(h, data)
			}
			b.StopTimer()
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(x.bytes())/(1<<20), "tail-MiB")
			runtime.KeepAlive(x)
		})
	}
}

// FuzzTail feeds rooms bodies of any size (some too large to keep), chains
// that restart, and more rooms than the index keeps, under a small byte
// bound: after every message, each room's kept bodies are the ones fed,
// their lengths add up to the log, and the tail's accounting is exact.
// Each op is three bytes: the room and flags, then the body's size.
func FuzzTail(f *testing.F) {
	f.Add([]byte{0, 0, 60, 1, 0, 100, 2, 0, 130, 0, 0, 90})
	f.Add(bytes.Repeat([]byte{0, 0, 90, 0, 0, 50, 0, 0, 130, 0, 0, 70, 0, 0, 110}, 40))
	f.Add(bytes.Repeat([]byte{0, 0x20, 0, 1, 0x40, 1, 0x40, 0, 5, 2, 0x01, 0}, 20))
	f.Fuzz(fuzzTail)
}

func fuzzTail(t *testing.T, ops []byte) {
	ops = ops[:min(len(ops), 3*500)] // enough for every path, and fast
	x := newIndex(8, 2, 4, 48<<10)
	fed := map[uint64][]byte{}
	last := map[string]uint64{}
	for seq := uint64(1); len(ops) >= 3; seq++ {
		op, n := ops[0], (int(ops[1])<<8|int(ops[2]))%(tailMaxMessage+2048)
		ops = ops[3:]
		subject := []string{"a", "b", "c"}[int(op&0x3f)%3]
		prev := last[subject]
		if op&0x40 != 0 && prev != 0 {
			prev = 0 // a message of the room went missing: the chain restarts
		}
		data := sizedBody(seq, n)
		fed[seq] = data
		x.observe(feedMsg(subject, seq, prev, int(seq)), data)
		last[subject] = seq

		total := 0
		for name, c := range x.rooms {
			total += c.logCap()
			require.LessOrEqual(t, c.bodies, min(c.n, 4), name)
			from, to, ok := c.bodySpan(c.n-c.bodies, c.n)
			require.True(t, ok, "seq %d, room %s: the kept bodies' lengths do not add up to the log", seq, name)
			require.Equal(t, len(c.log)-c.dead, to-from)
			for k, off := c.n-c.bodies, from; k < c.n; k++ {
				e := c.at(k)
				if got := c.log[off : off+int(e.bodyLen)]; !bytes.Equal(fed[e.seq], got) {
					t.Fatalf("seq %d, room %s: the body of %d is %.40q…, want %.40q…", seq, name, e.seq, got, fed[e.seq])
				}
				off += int(e.bodyLen)
			}
		}
		require.Equal(t, total, x.tailBytes)
		require.LessOrEqual(t, x.tailBytes, 48<<10)
	}
}
