package backfill

import (
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Why an index: nats-server finds a subject's next message inside a stream
// block by walking the block message by message from the start point
// (filestore's firstMatching), so reading a room whose messages are
// interleaved with 999 other rooms' costs about 1,000 message lookups per
// message of the room, wherever the read starts: ~8 ms for a room's last 100
// changes among 1,000 rooms, direct get or consumer alike. A message fetched
// by its sequence costs one lookup. The index keeps, per room, the sequences
// (and store times) of its latest messages, learnt from the stream's
// RePublish feed, so a read can fetch exactly those.
//
// The feed's headers make each room's chain self-describing: every
// re-published message carries its sequence and Nats-Last-Sequence, the
// previous sequence stored on the same subject (0 for the subject's first).
// A room's entries are therefore known to be every message of the room after
// base: nothing in between is ever guessed. A message whose Last-Sequence is
// not the newest entry (the feed dropped something, or the index started
// after the room's last message) restarts the room's chain.

// indexEntry is one stored message of a room.
type indexEntry struct {
	seq uint64
	ts  int64 // store time, ns since the epoch
}

// roomChain is a room's latest messages: every message of the room stored
// after base, oldest first, at most depth of them (a ring).
type roomChain struct {
	base    uint64
	entries []indexEntry // ring buffer
	head    int          // index of the oldest entry
	n       int
}

func (c *roomChain) at(i int) indexEntry { return c.entries[(c.head+i)%len(c.entries)] }

func (c *roomChain) last() uint64 {
	if c.n == 0 {
		return c.base
	}
	return c.at(c.n - 1).seq
}

// add appends e, whose previous message in the room is prev.
func (c *roomChain) add(e indexEntry, prev uint64) {
	if prev != c.last() {
		// A message of the room is not in the chain: start again from e.
		c.base, c.head, c.n = prev, 0, 0
	}
	if c.n == len(c.entries) {
		c.base = c.entries[c.head].seq
		c.entries[c.head] = e
		c.head = (c.head + 1) % len(c.entries)
		return
	}
	c.entries[(c.head+c.n)%len(c.entries)] = e
	c.n++
}

// index holds the chains of the rooms most recently written, bounded in rooms
// and in depth; a read it cannot answer falls back to the server's walk.
type index struct {
	depth    int
	maxRooms int

	mu    sync.Mutex
	rooms map[string]*roomChain // by stored subject
	// newest is the highest sequence the feed has shown (any room): how far
	// the stream reaches, as far as the index knows.
	newest uint64
}

func newIndex(depth, maxRooms int) *index {
	return &index{depth: depth, maxRooms: maxRooms, rooms: map[string]*roomChain{}}
}

// reset forgets every room (the stream was re-created: its sequences name
// other messages now).
func (x *index) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.rooms = map[string]*roomChain{}
	x.newest = 0
}

// observe records one message of the RePublish feed; it ignores messages
// without the headers it needs.
func (x *index) observe(h nats.Header) {
	subject := h.Get(jetstream.SubjectHeader)
	seq, err1 := strconv.ParseUint(h.Get(jetstream.SequenceHeader), 10, 64)
	prev, err2 := strconv.ParseUint(h.Get(jetstream.LastSequenceHeader), 10, 64)
	ts, err3 := time.Parse(time.RFC3339Nano, h.Get(jetstream.TimeStampHeaer))
	if subject == "" || err1 != nil || err2 != nil || err3 != nil || seq == 0 || prev >= seq {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.newest = max(x.newest, seq)
	c := x.rooms[subject]
	if c == nil {
		if len(x.rooms) >= x.maxRooms {
			// Forget some room (map order is random): a cache, not a record.
			for k := range x.rooms {
				delete(x.rooms, k)
				break
			}
		}
		c = &roomChain{base: prev, entries: make([]indexEntry, x.depth)}
		x.rooms[subject] = c
	}
	if seq <= c.last() {
		return // a duplicate delivery
	}
	c.add(indexEntry{seq: seq, ts: ts.UnixNano()}, prev)
}

// lookup returns the sequences of subject's messages from st on that the
// index knows (at most its depth), the sequence after which the server
// must be asked for newer ones (the newest indexed: the feed may lag the
// stream), and the newest sequence of the whole stream the index has seen.
// ok is false when
// the index cannot tell: the room is not indexed, or its chain does not reach
// back to st.
func (x *index) lookup(subject string, st start) (seqs []uint64, tail, newest uint64, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.rooms[subject]
	if c == nil {
		return nil, 0, 0, false
	}
	// Find the first entry at or after the start; the chain must reach back
	// to it (every message of the room after base is an entry).
	i := 0
	switch {
	case !st.byTime:
		if st.afterSeq < c.base {
			return nil, 0, 0, false
		}
		for i < c.n && c.at(i).seq <= st.afterSeq {
			i++
		}
	case st.at.IsZero():
		if c.base != 0 {
			return nil, 0, 0, false // the room's first messages are not indexed
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
			return nil, 0, 0, false
		}
	}
	for ; i < c.n; i++ {
		seqs = append(seqs, c.at(i).seq)
	}
	return seqs, c.last(), x.newest, true
}
