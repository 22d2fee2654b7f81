package roomstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
)

// A getmany of a reconnect storm names up to proto.MaxBatchRooms rooms: read
// one by one, that is as many KV gets, each a request through the NATS
// server, queued behind everything else the storm has the process do
// (batches of 1,000 took 60 ms to over a second). One batched direct get
// with multi_last asks the bucket's stream for the latest value of every key
// at once: one request, the values, then an end-of-batch status.

// maxMultiLast is how many subjects nats-server answers in one multi_last
// request (more is refused as "too many results").
const maxMultiLast = 1024

// errNoMultiGet says the batched read could not answer; the caller reads
// key by key.
var errNoMultiGet = errors.New("batched direct get unavailable")

// A batched read's first reply is awaited at most multiFirstReply. None
// means the request went nowhere: a role without publish permission on
// the bare $JS.API.DIRECT.GET.<stream> subject is refused silently, as far
// as the request goes, and a stalled server answers nothing either. The
// batched reads then pause (key by key is slower, not wrong) and are tried
// again after multiRetryMin, doubling to multiRetryMax while they stay
// unanswered: a permission granted or a server back is used again without
// a restart, and one that is not costs a wait of multiFirstReply per
// multiRetryMax. Each unanswered read is counted
// (batched_reads_unanswered_total) and logged.
const (
	multiFirstReply = 2 * time.Second
	multiRetryMin   = time.Second
	multiRetryMax   = time.Minute
)

// multiPause is when the batched reads may be tried again after one went
// unanswered.
type multiPause struct {
	mu    sync.Mutex
	until time.Time     // no batched read before it
	wait  time.Duration // the pause after the next unanswered read
}

// paused says whether a batched read must not be tried now.
func (p *multiPause) paused(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return now.Before(p.until)
}

// unanswered starts a pause, doubling the next one; it returns the pause.
func (p *multiPause) unanswered(now time.Time, first, most time.Duration) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	wait := max(p.wait, first)
	p.until = now.Add(wait)
	p.wait = min(2*wait, most)
	return wait
}

// answered ends the doubling: the server answers again.
func (p *multiPause) answered() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wait = 0
}

// GetMany reads the states of rooms (names as stored: no client rooms) in
// one batched direct get; states[i] is rooms[i]'s, nil when it has none.
// errNoMultiGet when the batched read cannot answer (no connection for it,
// too many rooms, direct gets off, a reply lost, a pause after an
// unanswered read): then nothing is known and the caller reads key by key.
func (s *stateStore) GetMany(ctx context.Context, rooms []string) ([]*proto.RoomState, error) {
	if s.nc == nil || len(rooms) == 0 || len(rooms) > maxMultiLast || s.multi.paused(time.Now()) {
		return nil, errNoMultiGet
	}
	bucket := s.kv.Bucket()
	at := make(map[string][]int, len(rooms)) // subject → positions in rooms
	subjects := make([]string, 0, len(rooms))
	for i, r := range rooms {
		subj := proto.KVSubject(bucket, r)
		if _, seen := at[subj]; !seen {
			subjects = append(subjects, subj)
		}
		at[subj] = append(at[subj], i)
	}
	replies, err := directget.Subscribe(s.nc, s.nc.NewInbox(), len(subjects)+1)
	if err != nil {
		return nil, fmt.Errorf("%w: subscribe: %v", errNoMultiGet, err)
	}
	defer replies.Close()
	subject := proto.DirectGetSubject(proto.KVStream(bucket))
	req := directget.Request{MultiLast: subjects, Batch: len(subjects)}
	if err := s.nc.PublishRequest(subject, replies.Subject(), req.AppendJSON(nil)); err != nil {
		return nil, fmt.Errorf("%w: %v", errNoMultiGet, err)
	}
	fctx, cancel := context.WithTimeout(ctx, s.firstReply)
	m, err := replies.Next(fctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.m.multiUnanswered.Inc()
		wait := s.multi.unanswered(time.Now(), s.retryMin, multiRetryMax)
		s.log.Warn().Str("subject", subject).Dur("waited", s.firstReply).Dur("retry_in", wait).
			Msg("a batched read of room states got no answer (is publishing to this subject allowed?): reading key by key until then")
		return nil, errNoMultiGet
	}
	s.multi.answered()
	states := make([]*proto.RoomState, len(rooms))
	var batch directget.Batch
	for {
		r, err := batch.Take(m)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errNoMultiGet, err)
		}
		if r.Done {
			if r.Pending != 0 {
				return nil, fmt.Errorf("%w: the batch was cut (%d pending)", errNoMultiGet, r.Pending)
			}
			return states, nil
		}
		pos, ok := at[r.Subject]
		if !ok {
			return nil, fmt.Errorf("%w: a reply for %q, not asked for", errNoMultiGet, r.Subject)
		}
		if op := r.Header.Get(hdrKVOperation); op != "DEL" && op != "PURGE" { // deleted: no state, as Get says
			var st proto.RoomState
			if err := json.Unmarshal(r.Data, &st); err != nil {
				return nil, fmt.Errorf("%w: %s %s sequence %d: %v", errBadValue, proto.BucketRoomState, r.Subject[len(proto.KVSubject(bucket, "")):], r.Seq, err)
			}
			for _, i := range pos {
				states[i] = &st
			}
		}
		if m, err = replies.Next(ctx); err != nil {
			return nil, err
		}
	}
}

// hdrKVOperation marks a KV delete or purge (a stored message's own header).
const hdrKVOperation = "KV-Operation"
