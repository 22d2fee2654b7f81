package gateway

import (
	"context"
	"fmt"
	"sync"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
)

// maxRecordBatch is the most session records one read asks for
// (nats-server answers a multi_last of up to 1,024 subjects).
const maxRecordBatch = 256

// recordReads batches loadSession's reads of KV SESSIONS. The CONNECTs of
// a reconnect storm come together: one batched direct get (multi_last
// over their keys) reads the records of every CONNECT that came while the
// read before it was in flight, instead of a request each. One read is in
// flight at a time; a lone CONNECT's is read at once.
type recordReads struct {
	mu      sync.Mutex
	queue   []*recordRead
	reading bool // a goroutine is reading the queue (readRecords)
}

type recordRead struct {
	key  string // the record's subject
	done chan struct{}
	rec  []byte // nil: none (never written, expired, or deleted)
	err  error
}

// readRecord is the value of pid's record, nil when there is none.
func (g *Gateway) readRecord(ctx context.Context, pid string) ([]byte, error) {
	r := &recordRead{key: proto.KVSubject(proto.BucketSessions, pid), done: make(chan struct{})}
	q := &g.sessions.reads
	q.mu.Lock()
	q.queue = append(q.queue, r)
	if !q.reading {
		q.reading = true
		go g.readRecords()
	}
	q.mu.Unlock()
	select {
	case <-r.done:
		return r.rec, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// readRecords reads the queue a batch at a time until it is empty.
func (g *Gateway) readRecords() {
	q := &g.sessions.reads
	for {
		q.mu.Lock()
		n := min(len(q.queue), maxRecordBatch)
		if n == 0 {
			q.reading, q.queue = false, nil
			q.mu.Unlock()
			return
		}
		batch := q.queue[:n:n]
		q.queue = q.queue[n:]
		q.mu.Unlock()
		g.readRecordBatch(batch)
	}
}

// readRecordBatch reads batch's records in one request and answers each
// waiter; a failure (or a panic, stopped here) fails them all, and their
// clients get new sessions.
func (g *Gateway) readRecordBatch(batch []*recordRead) {
	err := fmt.Errorf("reading %d session records: panicked", len(batch))
	g.guard.Do("sessions", func() {
		g.hook("sessions")
		var values map[string][]byte
		values, err = g.readRecordValues(batch)
		for _, r := range batch {
			r.rec = values[r.key]
		}
	})
	for _, r := range batch {
		r.err = err
		close(r.done)
	}
}

// readRecordValues is the value stored last under each of batch's keys,
// by key; none for a key never written, expired, or deleted.
func (g *Gateway) readRecordValues(batch []*recordRead) (map[string][]byte, error) {
	keys := make([]string, 0, len(batch))
	asked := make(map[string]bool, len(batch))
	for _, r := range batch {
		if !asked[r.key] { // a pid two CONNECTs bring at once
			asked[r.key] = true
			keys = append(keys, r.key)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.RequestTimeout)
	defer cancel()
	msgs, pending, err := g.directGet(ctx, proto.KVStream(proto.BucketSessions), directget.Request{MultiLast: keys, Batch: len(keys)}, len(keys))
	if err != nil {
		return nil, err
	}
	if pending != 0 {
		return nil, fmt.Errorf("direct get: %d of %d session records not sent", pending, len(keys))
	}
	values := make(map[string][]byte, len(msgs))
	for _, m := range msgs {
		if op := m.Header.Get(kvOperation); op == "DEL" || op == "PURGE" {
			continue // recovered (forgetSession), or purged
		}
		values[m.Subject] = m.Data
	}
	return values, nil
}
