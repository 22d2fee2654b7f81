package backfill

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// start says where a history read begins: after a stream sequence (exact),
// or at a store time (a `since` minus the skew margin).
type start struct {
	afterSeq uint64
	byTime   bool
	at       time.Time // byTime only; the zero time means the stream's beginning
}

// startOf turns a validated cursor into a start.
func startOf(c proto.Cursor, margin time.Duration) start {
	if c.AfterSeq != nil {
		return start{afterSeq: *c.AfterSeq}
	}
	t := time.UnixMilli(*c.Since).Add(-margin)
	if t.Before(time.UnixMilli(0)) {
		t = time.Time{}
	}
	return start{byTime: true, at: t}
}

// stored is one message read from the stream.
type stored struct {
	Seq  uint64
	Data []byte
	// At is when the stream stored it: the envelope gate measures updatedAt
	// against it (proto.MaxFutureSkew).
	At time.Time
}

// budget bounds one read.
type budget struct {
	maxScan  int
	maxBytes int
	deadline time.Time
}

// spent says which limit a read that has scanned messages and bytes has
// reached, cutNone if none. withTime also checks the deadline.
func (b budget) spent(scanned, bytes int, withTime bool) cut {
	switch {
	case scanned >= b.maxScan:
		return cutScan
	case bytes >= b.maxBytes:
		return cutBytes
	case withTime && time.Until(b.deadline) <= 0:
		return cutTime
	}
	return cutNone
}

// cut says why a read stopped before the end of its snapshot; "" means it
// did not.
type cut string

const (
	cutNone  cut = ""
	cutLimit cut = "limit" // the visitor refused a message (page full)
	cutScan  cut = "scan"  // MaxScan messages read
	cutBytes cut = "bytes" // MaxBytes read
	cutTime  cut = "time"  // MaxTime spent
	cutGap   cut = "gap"   // a delivery went missing on the wire
)

// readRequest is one read of a room.
type readRequest struct {
	subject string // the room's stored subject
	start   start
	budget  budget
	// want is how many messages the caller expects to visit (its page, and
	// the one after): the first request of a batched read asks for a
	// little more, later ones for twice as many each, up to chunk.
	want int
}

// readResult is what a read did.
type readResult struct {
	scanned int
	bytes   int // read by the direct readers (the consumer reader keeps its own count)
	cut     cut
	indexed bool // the sequences came from the index
	toEnd   bool // the index's read also read what is newer than the index (or fell back to the walk): the room's end
	// state, when not nil, is the stream's state the answer is exact at
	// (the tail's): the completeness check uses it instead of asking.
	state *jetstream.StreamState
}

// chunk is how many messages one pull asks for. Small enough that a page cut
// short wastes little, large enough that a room's usual backlog is one pull.
const chunk = 512

// consumerReader reads one room's messages from stream ROOMS through a short-lived
// filtered consumer: the server walks only that subject's messages (its
// per-subject index, and a binary search for a start time), so the cost grows
// with the room's own messages since the cursor, never with the stream.
//
// It uses a plain ephemeral consumer rather than jetstream's ordered consumer
// because it needs the consumer's NumPending at creation (the end of the
// snapshot it reads, so it never waits for messages that are not there) and
// one consumer across several pulls; it checks the delivery sequence itself,
// which is what the ordered consumer does.
type consumerReader struct {
	js     jetstream.JetStream
	stream string
}

// read always answers.
func (r consumerReader) read(ctx context.Context, rq readRequest, visit func(stored) bool) (readResult, bool, error) {
	res, err := r.consume(ctx, rq.subject, rq.start, rq.budget, visit)
	return res, true, err
}

// consume has the contract of reader.read.
func (r consumerReader) consume(ctx context.Context, subject string, st start, b budget, visit func(stored) bool) (readResult, error) {
	var res readResult
	cfg := jetstream.ConsumerConfig{
		FilterSubject:     subject,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: 10 * time.Second, // cleans up after a crash; normally deleted below
		MemoryStorage:     true,
		Replicas:          1,
		MaxWaiting:        1,
		HeadersOnly:       false,
	}
	switch {
	case !st.byTime:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = st.afterSeq + 1
	case st.at.IsZero():
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	default:
		at := st.at
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &at
	}
	cctx, cancel := context.WithDeadline(ctx, b.deadline)
	defer cancel()
	cons, err := r.js.CreateConsumer(cctx, r.stream, cfg)
	if err != nil {
		return res, fmt.Errorf("read %s: create consumer: %w", subject, err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		// The answer does not wait on this: the consumer is gone in one
		// round trip, or by InactiveThreshold if that fails.
		go func() {
			dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer dcancel()
			_ = r.js.DeleteConsumer(dctx, r.stream, name)
		}()
	}()
	pending := int(cons.CachedInfo().NumPending)
	var bytes int
	var delivered uint64
	// In a cluster the create call returns before the consumer's leader
	// serves pull requests: until the first delivery, "no responders"
	// (from Fetch or from its batch) means wait a moment and pull again.
	notYet := func(err error) bool {
		return errors.Is(err, nats.ErrNoResponders) && delivered == 0 && time.Until(b.deadline) > 10*time.Millisecond
	}
	retry := func() {
		select {
		case <-cctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
	for pending > 0 {
		if res.scanned >= b.maxScan {
			res.cut = cutScan
			return res, nil
		}
		if bytes >= b.maxBytes {
			res.cut = cutBytes
			return res, nil
		}
		wait := time.Until(b.deadline)
		if wait <= 0 {
			res.cut = cutTime
			return res, nil
		}
		n := min(chunk, pending, b.maxScan-res.scanned)
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(max(wait, time.Millisecond)))
		if notYet(err) {
			retry()
			continue
		}
		if err != nil {
			return res, fmt.Errorf("read %s: fetch: %w", subject, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				return res, fmt.Errorf("read %s: metadata: %w", subject, err)
			}
			if meta.Sequence.Consumer != delivered+1 {
				// A delivery was lost between server and client: stop before
				// the hole, the continuation cursor picks it up.
				res.cut = cutGap
				return res, nil
			}
			delivered++
			if !visit(stored{Seq: meta.Sequence.Stream, Data: m.Data(), At: meta.Timestamp}) {
				res.cut = cutLimit
				return res, nil
			}
			res.scanned++
			bytes += len(m.Data())
			pending = int(meta.NumPending)
			if pending == 0 || res.scanned >= b.maxScan || bytes >= b.maxBytes {
				break
			}
		}
		if err := batch.Error(); got == 0 && notYet(err) {
			retry()
			continue
		} else if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			return res, fmt.Errorf("read %s: fetch: %w", subject, err)
		}
		if got == 0 {
			// Nothing came in the time left: the snapshot's messages were
			// removed (max age) while we read, or the server is slow.
			if time.Until(b.deadline) <= 0 {
				res.cut = cutTime
				return res, nil
			}
			return res, nil
		}
	}
	return res, nil
}

// reachesBack reports whether stream ROOMS, in state s, still holds every
// message a read from st needs. s must be taken after the read, so a removal
// that raced with it is seen (the answer errs on the side of false).
//
//   - afterSeq: every message after it is there when the first remaining
//     sequence is at most afterSeq+1. A cursor beyond the last sequence comes
//     from an earlier incarnation of the stream: false.
//   - store time: a stream that never removed anything (first sequence 1)
//     reaches back to any time. Otherwise the removed messages were stored no
//     later than the first remaining one (or, with none left, the last one),
//     so the stream reaches back when that is strictly before the start time.
//
// Removal is counted stream-wide: the stream cannot tell whether the removed
// messages belonged to the room, so a room may be reported incomplete when it
// lost nothing, never the other way around.
func reachesBack(st start, s jetstream.StreamState) bool {
	if !st.byTime {
		if st.afterSeq > s.LastSeq {
			return false
		}
		return st.afterSeq+1 >= s.FirstSeq
	}
	if s.FirstSeq <= 1 {
		return true
	}
	edge := s.FirstTime
	if s.Msgs == 0 {
		edge = s.LastTime
	}
	if edge.IsZero() || st.at.IsZero() {
		return false
	}
	return edge.Before(st.at)
}
