package backfill

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// Why a tail: a read the index answers still costs the server one lookup per
// message, and a lookup in a block that is not in the file store's cache
// loads the block from disk: that, not the lookups, made the slow reads in
// sync's own time. The feed the index learns from carries every stored message's
// body too, so the index keeps the bodies of each room's latest messages
// (the tail) and answers the common resync from memory. It only does so
// when it can prove the answer is the one the stream would give (see
// index.tailRead and removals); otherwise the read goes to the stream as
// before.
//
// Memory: the bodies of a room live in one byte slice (its log), appended in
// stream order; an entry of the chain holds its body's length, not where it
// starts. The oldest bodies' bytes are dropped by moving the log's start
// (dead) and reclaimed by compacting in place when the log would grow. No
// pointer per message; the bound is TailBytes of log capacity over all
// rooms, checked on every append (a room beyond it loses its bodies: the
// room chosen at random, as the index evicts rooms).
//
// Why no offsets: offsets stored in the entries had to be rewritten on every
// compaction, for exactly the entries that had bodies at that moment, and a
// compaction run while the newest entry was counted but its body not yet
// (issue 13) rewrote the wrong window; the uint32 offsets then wrapped below
// zero and index.observe panicked. With lengths only, the one position kept
// is dead (an int that only grows by a kept body's length and returns to
// zero), and every read sums the lengths and checks that they end exactly
// at len(log) before it slices (bodySpan).

// tailWait is how long a tail read waits for the feed to show the stream's
// last sequence (the feed trails the stream by the time a re-published
// message takes to arrive); longer, and the read goes to the stream.
const tailWait = 2 * time.Millisecond

// tailMaxMessage is the largest body the tail keeps; a larger message ends
// the room's tail there (its older bodies cannot answer a read that needs
// the large one).
const tailMaxMessage = 16 << 10

// logCap is the room's log capacity, what the tail accounts for it.
func (c *roomChain) logCap() int { return cap(c.log) }

// dropBodies forgets the room's bodies.
func (c *roomChain) dropBodies() {
	c.log, c.dead, c.bodies = nil, 0, 0
}

// keepBody appends the body of the chain's newest entry (just added) to the
// log, keeping at most keep bodies; a body too large to keep ends the tail.
func (c *roomChain) keepBody(data []byte, keep int) {
	if keep == 0 || len(data) > tailMaxMessage {
		c.dropBodies()
		return
	}
	if len(c.log)+len(data) > cap(c.log) && c.dead > 0 {
		c.compact()
	}
	c.entries[(c.head+c.n-1)%len(c.entries)].bodyLen = uint32(len(data))
	c.log = append(c.log, data...)
	c.bodies++
	for c.bodies > keep {
		c.dropOldestBody()
	}
}

// dropOldestBody forgets the oldest body the chain holds.
func (c *roomChain) dropOldestBody() {
	c.dead += int(c.at(c.n - c.bodies).bodyLen)
	c.bodies--
	if c.bodies == 0 || c.dead > len(c.log) {
		// The second case is a broken invariant (see bodySpan): forget the
		// bodies rather than keep a start past the log's end.
		c.log, c.dead, c.bodies = c.log[:0], 0, 0
	}
}

// compact moves the live bodies to the log's start. No entry changes: they
// hold lengths, not offsets.
func (c *roomChain) compact() {
	c.log = c.log[:copy(c.log, c.log[c.dead:])]
	c.dead = 0
}

// bodySpan is where, in the log, the bodies of entries i to end-1 lie
// (n-bodies <= i <= end <= n). ok is false when the kept bodies' lengths do
// not add up to the log's live bytes: a bug, and the caller must not read
// the log then.
func (c *roomChain) bodySpan(i, end int) (from, to int, ok bool) {
	first := c.n - c.bodies
	if i < first || i > end || end > c.n {
		return 0, 0, false
	}
	off := c.dead
	for k := first; k < c.n; k++ {
		if k == i {
			from = off
		}
		if k == end {
			to = off
		}
		off += int(c.at(k).bodyLen)
	}
	if end == c.n {
		to = off
		if i == end {
			from = off
		}
	}
	return from, to, off == len(c.log)
}

// from is the position of the chain's first entry a read from st needs, ok
// false when the chain does not reach back to st (see lookup).
func (c *roomChain) from(st start) (int, bool) {
	i := 0
	switch {
	case !st.byTime:
		if st.afterSeq < c.base {
			return 0, false
		}
		for i < c.n && c.at(i).seq <= st.afterSeq {
			i++
		}
	case st.at.IsZero():
		if c.base != 0 {
			return 0, false // the room's first messages are not indexed
		}
	default:
		t := st.at.UnixNano()
		for i < c.n && c.at(i).ts < t {
			i++
		}
		// Messages stored at or after t are all entries when base is the
		// room's beginning, or when an entry (or base's message, stored
		// before the first entry) is older than t.
		if i == 0 && c.base != 0 {
			return 0, false
		}
	}
	return i, true
}

// tailMayAnswer says whether the tail holds the bodies of subject's messages
// from st on, as far as the feed has shown them: worth asking the stream's
// state for a tail read.
func (x *index) tailMayAnswer(subject string, st start) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.rooms[subject]
	if c == nil || x.keep == 0 {
		return false
	}
	i, ok := c.from(st)
	return ok && i >= c.n-c.bodies && c.last()+1 >= x.contiguousFrom
}

// waitNewest waits until the feed has shown sequence seq, at most d; false
// when it has not.
func (x *index) waitNewest(ctx context.Context, seq uint64, d time.Duration) bool {
	var timer *time.Timer
	x.mu.Lock()
	for x.newest < seq {
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		}
		if x.moved == nil {
			x.moved = make(chan struct{})
		}
		moved := x.moved
		x.mu.Unlock()
		select {
		case <-moved:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
		x.mu.Lock()
	}
	x.mu.Unlock()
	return true
}

// tailRead returns subject's messages from st on, as stream ROOMS held them
// in state s (taken before this call), from the tail: ok only when that is
// certain. barrier is removals' word for s: no sequence above it, at or
// after s.FirstSeq, has been removed. The conditions:
//
//   - the chain reaches back to st (every message of the room after its
//     base is an entry, by the feed's Last-Sequence headers);
//   - the feed has shown s.LastSeq, and showed every sequence from before
//     the chain's last entry on (a dropped delivery of the room after it
//     would otherwise go unseen): so every message of the room up to
//     s.LastSeq is an entry;
//   - every entry read has its body;
//   - none was removed: entries below s.FirstSeq are skipped (removed from
//     the front, as the stream's read would skip them), and an entry at or
//     below barrier fails the read (it may have been deleted).
//
// Entries stored after s.LastSeq are left out: the answer is the stream's
// at s. The bodies are copied (the log changes once the lock is released).
func (x *index) tailRead(subject string, st start, s jetstream.StreamState, barrier uint64) ([]stored, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.rooms[subject]
	if c == nil || x.newest < s.LastSeq || c.last()+1 < x.contiguousFrom {
		return nil, false
	}
	i, ok := c.from(st)
	if !ok {
		return nil, false
	}
	for i < c.n && c.at(i).seq < s.FirstSeq {
		i++
	}
	end := i
	for end < c.n && c.at(end).seq <= s.LastSeq {
		if c.at(end).seq <= barrier {
			return nil, false
		}
		end++
	}
	if i == end {
		return []stored{}, true
	}
	if i < c.n-c.bodies {
		return nil, false // some bodies are not kept
	}
	from, to, ok := c.bodySpan(i, end)
	if !ok {
		return nil, false
	}
	buf := append([]byte(nil), c.log[from:to]...)
	out := make([]stored, 0, end-i)
	for off := 0; i < end; i++ {
		e := c.at(i)
		next := off + int(e.bodyLen)
		out = append(out, stored{Seq: e.seq, Data: buf[off:next:next], At: time.Unix(0, e.ts)})
		off = next
	}
	return out, true
}

// evictBodies frees tail bytes until the tail is within its bound, dropping
// the bodies of rooms other than keep (map order is random).
func (x *index) evictBodies(keep *roomChain) {
	for _, c := range x.rooms {
		if x.tailBytes <= x.maxTailBytes {
			return
		}
		if c == keep || c.log == nil {
			continue
		}
		x.tailBytes -= c.logCap()
		c.dropBodies()
	}
	if x.tailBytes > x.maxTailBytes {
		x.tailBytes -= keep.logCap()
		keep.dropBodies()
	}
}

// removals follows, from the stream infos the service takes, which
// sequences may have been removed (deleted, purged, expired) from stream
// ROOMS: the tail holds bodies the stream may no longer have, and must not
// answer with them.
//
// A stream state says: sequences below FirstSeq are gone; of those from
// FirstSeq to LastSeq, LastSeq-FirstSeq+1-Msgs are gone too (interior
// deletes), which ones it does not say. With none, every entry from FirstSeq
// to LastSeq is still stored. With some, they were all removed at or below
// the LastSeq of the first state that showed them (a message is removed
// after it is stored): the barrier. A later state with the same FirstSeq and
// interior count shows no new removal (removals only raise FirstSeq or the
// count), in whichever order the two states were taken, so the barrier
// holds for it too; a state that differs sets a new barrier, its LastSeq.
type removals struct {
	mu      sync.Mutex
	known   bool
	first   uint64
	deleted uint64
	barrier uint64
}

// observe takes in state s (from a stream info) and returns the barrier for
// it: no sequence above it, at or after s.FirstSeq, was removed when s was
// taken.
func (r *removals) observe(s jetstream.StreamState) uint64 {
	deleted := uint64(0)
	if s.LastSeq+1 >= s.FirstSeq && s.LastSeq+1-s.FirstSeq > s.Msgs {
		deleted = s.LastSeq + 1 - s.FirstSeq - s.Msgs
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case deleted == 0:
		r.barrier = 0
	case r.known && r.first == s.FirstSeq && r.deleted == deleted:
		// No removal between the two states: the barrier stands.
	default:
		r.barrier = s.LastSeq
	}
	r.known, r.first, r.deleted = true, s.FirstSeq, deleted
	return r.barrier
}

// reset forgets what was learnt (the stream was created again).
func (r *removals) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.known, r.first, r.deleted, r.barrier = false, 0, 0, 0
}

// tailReader answers a read from the tail when it can, with the stream's
// state taken first: the tail's answer is the stream's at that state
// (res.state), which decides completeness as after any read. It costs one
// round trip (the stream info) and no message read. When it cannot answer,
// nothing was visited and the next reader reads the stream.
type tailReader struct{ s *service }

func (t tailReader) read(ctx context.Context, rq readRequest, visit func(stored) bool) (readResult, bool, error) {
	s := t.s
	if !s.index.tailMayAnswer(rq.subject, rq.start) {
		return readResult{}, false, nil
	}
	stream, err := s.js.Stream(ctx, proto.StreamRooms)
	if err != nil {
		return readResult{}, false, nil // the stream's read says what is wrong
	}
	info := stream.CachedInfo()
	if _, changed := s.learn(info); changed || s.mode.Load() != modeDirect {
		return readResult{}, false, nil
	}
	barrier := s.removals.observe(info.State)
	if !s.index.waitNewest(ctx, info.State.LastSeq, tailWait) {
		return readResult{}, false, nil
	}
	msgs, ok := s.index.tailRead(rq.subject, rq.start, info.State, barrier)
	if !ok {
		return readResult{}, false, nil
	}
	res := readResult{state: &info.State}
	for _, m := range msgs {
		if res.cut = rq.budget.spent(res.scanned, res.bytes, false); res.cut != cutNone {
			break
		}
		if !visit(m) {
			res.cut = cutLimit
			break
		}
		res.scanned++
		res.bytes += len(m.Data)
	}
	return res, true, nil
}
