package gateway

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
)

// maxLastBatch is the most subjects one batched multi_last asks for, when
// it reads for several callers (nats-server answers at most 1,024
// messages to one; a caller alone asks for all of its own).
const maxLastBatch = 256

// lastReads batches the multi_last reads a recovery makes of one stream:
// its session record (KV SESSIONS, the key's last value) and the last
// message of each of its rooms (ROOMS). The recoveries of a reconnect
// storm come together: the reads asked while one is in flight are read
// together in the next, one request over all their subjects, instead of
// a request each. One read is in flight at a time; a lone caller's is
// read at once. Each read begins after every caller it answers asked, so
// it is as fresh as a read of its own.
type lastReads struct {
	stream string
	where  string // its panic boundary's name
	mu     sync.Mutex
	queue  []*lastRead
	// reading: a goroutine is reading the queue (readLasts).
	reading bool
}

type lastRead struct {
	subjects []string
	done     chan struct{}
	// msgs is the last message of each subject the read found, by subject:
	// the whole batch's, shared by its callers, read only.
	msgs map[string]directget.Message
	err  error
}

// readLast is the last message of each of subjects that has one, by
// subject.
func (g *Gateway) readLast(ctx context.Context, q *lastReads, subjects []string) (map[string]directget.Message, error) {
	r := &lastRead{subjects: subjects, done: make(chan struct{})}
	q.mu.Lock()
	q.queue = append(q.queue, r)
	if !q.reading {
		q.reading = true
		go g.readLasts(q)
	}
	q.mu.Unlock()
	select {
	case <-r.done:
		return r.msgs, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// readLasts reads the queue a batch at a time until it is empty: the
// reads queued first, as many as ask for maxLastBatch subjects in all (at
// least one).
func (g *Gateway) readLasts(q *lastReads) {
	for {
		q.mu.Lock()
		n, subjects := 0, 0
		for n < len(q.queue) && (n == 0 || subjects+len(q.queue[n].subjects) <= maxLastBatch) {
			subjects += len(q.queue[n].subjects)
			n++
		}
		if n == 0 {
			q.reading, q.queue = false, nil
			q.mu.Unlock()
			return
		}
		batch := q.queue[:n:n]
		q.queue = q.queue[n:]
		q.mu.Unlock()
		g.readLastBatch(q, batch)
	}
}

// readLastBatch reads batch's subjects in one request and answers each
// caller; a failure (or a panic, stopped here) fails them all, and their
// clients get new sessions.
func (g *Gateway) readLastBatch(q *lastReads, batch []*lastRead) {
	var msgs map[string]directget.Message
	err := fmt.Errorf("reading the last messages of %d callers in %s: panicked", len(batch), q.stream)
	g.guard.Do(q.where, func() {
		g.hook(q.where)
		msgs, err = g.readLastMsgs(q.stream, batch)
	})
	for _, r := range batch {
		r.msgs, r.err = msgs, err
		close(r.done)
	}
}

// readLastMsgs is the last message of each subject batch asks for (the
// same subject asked twice is read once), by subject.
func (g *Gateway) readLastMsgs(stream string, batch []*lastRead) (map[string]directget.Message, error) {
	var subjects []string
	asked := map[string]bool{}
	for _, r := range batch {
		for _, s := range r.subjects {
			if !asked[s] {
				asked[s] = true
				subjects = append(subjects, s)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.RequestTimeout)
	defer cancel()
	msgs, pending, err := g.directGet(ctx, stream, directget.Request{MultiLast: subjects, Batch: len(subjects)}, len(subjects))
	if err != nil {
		return nil, err
	}
	if pending != 0 {
		return nil, fmt.Errorf("direct get: %d of %d subjects' last messages not sent", pending, len(subjects))
	}
	out := make(map[string]directget.Message, len(msgs))
	for _, m := range msgs {
		out[m.Subject] = m
	}
	return out, nil
}

// readRecord is the value of pid's session record, nil when there is none
// (never written, expired, or deleted).
func (g *Gateway) readRecord(ctx context.Context, pid string) ([]byte, error) {
	key := proto.KVSubject(proto.BucketSessions, pid)
	msgs, err := g.readLast(ctx, &g.sessions.records, []string{key})
	if err != nil {
		return nil, err
	}
	m, ok := msgs[key]
	if op := m.Header.Get(kvOperation); !ok || op == "DEL" || op == "PURGE" {
		return nil, nil // none, or recovered (forgetSession), or purged
	}
	return m.Data, nil
}

// rangeKeep is how long a room read is kept for the recoveries after it,
// and rangeBytes the message bytes the kept reads may hold in all (a read
// of more than an eighth of that is shared by those waiting for it, not
// kept).
const (
	rangeKeep  = 10 * time.Second
	rangeBytes = 4 << 20
)

// rangeReads shares recoveries' reads of a room's missed broadcasts. A
// read of a room's subject from one sequence up to its last message when
// the recovery looked (so everything up to it was stored) answers the
// same whoever asks: the recoveries of a storm that missed the same
// broadcasts of a room (a board's members, cut together) read them once.
// The first asks; the others wait for it, or take it from the reads kept
// (for rangeKeep, within limit bytes). A read that failed is not kept.
type rangeReads struct {
	limit int // bytes kept at most (rangeBytes; tests lower it)
	mu    sync.Mutex
	reads map[rangeKey]*rangeRead // in flight, and kept
	kept  []*rangeRead            // oldest first
	bytes int                     // of kept
}

type rangeKey struct {
	subject    string
	from, last uint64
	want       int // how many the read asks for at most
}

type rangeRead struct {
	key  rangeKey
	done chan struct{}
	// msgs: subject's messages from key.from on, up to key.want of them
	// (some may be past key.last): shared by its callers, read only.
	msgs  []directget.Message
	err   error
	at    time.Time
	bytes int
}

// readRange is up to k.want of k.subject's messages from k.from on, none
// of them past k.last, which the caller saw stored.
func (g *Gateway) readRange(ctx context.Context, k rangeKey) ([]directget.Message, error) {
	q := &g.sessions.ranges
	q.mu.Lock()
	r := q.reads[k]
	first := r == nil
	if first {
		r = &rangeRead{key: k, done: make(chan struct{})}
		if q.reads == nil {
			q.reads = map[rangeKey]*rangeRead{}
		}
		q.reads[k] = r
	}
	q.mu.Unlock()
	if first {
		g.readRangeNow(r)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	msgs := r.msgs
	for len(msgs) > 0 && msgs[len(msgs)-1].Seq > k.last {
		msgs = msgs[:len(msgs)-1] // stored after the caller looked: it comes live
	}
	return msgs, r.err
}

// readRangeNow reads r (with a time limit of its own: the callers waiting
// for it are not only the one that asked), keeps it, and lets its callers
// have it; a failure or a panic fails them all, and is not kept.
func (g *Gateway) readRangeNow(r *rangeRead) {
	q := &g.sessions.ranges
	r.err = fmt.Errorf("reading %s's messages from %d: panicked", r.key.subject, r.key.from)
	g.guard.Do("ranges", func() {
		g.hook("ranges")
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.RequestTimeout)
		defer cancel()
		r.msgs, _, r.err = g.directGet(ctx, proto.StreamRooms, directget.Request{Seq: r.key.from, NextBySubject: r.key.subject, Batch: r.key.want}, r.key.want)
	})
	now := time.Now()
	q.mu.Lock()
	for _, m := range r.msgs {
		r.bytes += len(m.Data) + len(m.Subject)
	}
	r.at = now
	if r.err != nil || r.bytes > q.limit/8 {
		delete(q.reads, r.key)
	} else {
		q.kept = append(q.kept, r)
		q.bytes += r.bytes
	}
	for len(q.kept) > 0 && (q.bytes > q.limit || now.Sub(q.kept[0].at) > rangeKeep) {
		old := q.kept[0]
		q.kept[0] = nil
		q.kept = q.kept[1:]
		q.bytes -= old.bytes
		delete(q.reads, old.key)
	}
	q.mu.Unlock()
	close(r.done)
}
