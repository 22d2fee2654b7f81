package backfill

import (
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
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
	// bodyLen is the length of the message's body in the room's log, when
	// the tail keeps it (at most tailMaxMessage). Where the body starts is
	// not stored: see roomChain.log.
	bodyLen uint32
}

// roomChain is a room's latest messages: every message of the room stored
// after base, oldest first, at most depth of them (a ring).
type roomChain struct {
	base    uint64
	entries []indexEntry // ring buffer
	head    int          // index of the oldest entry
	n       int

	// The tail (tail.go): the bodies of the newest `bodies` entries, in
	// stream order and back to back, are log[dead:]. Only their lengths are
	// in the entries, so moving the bytes (compact) touches no entry, and a
	// body's start is summed at read time and checked against len(log).
	log    []byte
	dead   int
	bodies int
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
		c.log, c.dead, c.bodies = c.log[:0], 0, 0
	}
	if c.n == len(c.entries) {
		if c.bodies == c.n {
			c.dropOldestBody()
		}
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
	// The tail: the bodies of each room's latest keep messages, at most
	// maxTailBytes of logs in all (tail.go).
	keep         int
	maxTailBytes int

	mu    sync.Mutex
	rooms map[string]*roomChain // by stored subject
	// newest is the highest sequence the feed has shown (any room): how far
	// the stream reaches, as far as the index knows.
	newest uint64
	// contiguousFrom: the feed has shown every sequence from it to newest
	// (a delivery the feed dropped is seen as a jump in sequences).
	contiguousFrom uint64
	// moved is closed when newest moves (waitNewest), nil when nobody waits.
	moved chan struct{}
	// tailBytes is the capacity of every room's log.
	tailBytes int
	// gaps counts the jumps in the feed's sequences (deliveries lost).
	gaps uint64
	// panicHook is Config.panicHook (tests only).
	panicHook func(where string)
}

func newIndex(depth, maxRooms, keep, maxTailBytes int) *index {
	return &index{depth: depth, maxRooms: maxRooms, keep: min(keep, depth), maxTailBytes: maxTailBytes, rooms: map[string]*roomChain{}}
}

// bytes is the memory of the tail's logs.
func (x *index) bytes() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.tailBytes
}

// feedGaps is how many times the feed's sequences jumped.
func (x *index) feedGaps() uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.gaps
}

// reset forgets every room (the stream was re-created: its sequences name
// other messages now).
func (x *index) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.rooms = map[string]*roomChain{}
	x.newest, x.contiguousFrom, x.tailBytes = 0, 0, 0
}

// observe records one message of the RePublish feed, data its body; it
// ignores messages without the headers it needs.
func (x *index) observe(h nats.Header, data []byte) {
	// The server's values, not copies a publisher put on the message.
	subject := proto.StreamHeader(h, jetstream.SubjectHeader)
	seq, err1 := strconv.ParseUint(proto.StreamHeader(h, jetstream.SequenceHeader), 10, 64)
	prev, err2 := strconv.ParseUint(proto.StreamHeader(h, jetstream.LastSequenceHeader), 10, 64)
	ts, err3 := time.Parse(time.RFC3339Nano, proto.StreamHeader(h, jetstream.TimeStampHeaer))
	if subject == "" || err1 != nil || err2 != nil || err3 != nil || seq == 0 || prev >= seq {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.newest == 0 || seq > x.newest+1 {
		if x.newest != 0 {
			x.gaps++
		}
		x.contiguousFrom = seq
	}
	if seq > x.newest {
		x.newest = seq
		if x.moved != nil {
			close(x.moved)
			x.moved = nil
		}
	}
	c := x.rooms[subject]
	if c == nil {
		if len(x.rooms) >= x.maxRooms {
			// Forget some room (map order is random): a cache, not a record.
			for k, old := range x.rooms {
				x.tailBytes -= old.logCap()
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
	before := c.logCap()
	c.add(indexEntry{seq: seq, ts: ts.UnixNano()}, prev)
	if x.panicHook != nil {
		x.panicHook("feed") // half-way: the entry added, its body not kept
	}
	c.keepBody(data, x.keep)
	x.tailBytes += c.logCap() - before
	if x.tailBytes > x.maxTailBytes {
		x.evictBodies(c)
	}
}

// indexed is what the index knows of a room's messages from a start.
type indexed struct {
	// entries are the room's messages from the start on that the index
	// knows (at most its depth), oldest first.
	entries []indexEntry
	// tail is the sequence after which the server must be asked for newer
	// messages (the newest indexed: the feed may lag the stream).
	tail uint64
	// newest is the newest sequence of the whole stream the index has seen.
	newest uint64
}

// lookup returns what the index knows of subject's messages from st on. ok
// is false when the index cannot tell: the room is not indexed, or its chain
// does not reach back to st.
func (x *index) lookup(subject string, st start) (known indexed, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.rooms[subject]
	if c == nil {
		return indexed{}, false
	}
	// Find the first entry at or after the start; the chain must reach back
	// to it (every message of the room after base is an entry).
	i, ok := c.from(st)
	if !ok {
		return indexed{}, false
	}
	for ; i < c.n; i++ {
		known.entries = append(known.entries, c.at(i))
	}
	known.tail, known.newest = c.last(), x.newest
	return known, true
}
