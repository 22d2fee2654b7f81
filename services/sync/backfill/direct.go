package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// errNoDirect says the stream did not answer a direct get (no responders:
// AllowDirect is off, or the stream does not exist); the caller falls back to
// a consumer read, which tells the two apart.
var errNoDirect = errors.New("direct get: no responders")

// directGetRequest is nats-server's JSApiMsgGetRequest (2.11+), the fields a
// batched read uses. With batch > 0 the server answers batch messages (fewer
// when the subject has no more, or max_bytes is reached after a message),
// then an end-of-batch status message.
type directGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	Batch     int        `json:"batch,omitempty"`
	MaxBytes  int        `json:"max_bytes,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
}

// Reply headers of a batched direct get. The server appends them after the
// stored message's own headers, so the last value of each is the server's (a
// publisher cannot spoof them by setting the same header).
const (
	hdrStatus     = "Status"
	hdrNumPending = "Nats-Num-Pending"
	// In a message: the sequence of the message sent before it in the same
	// batch (0 for the first). In the end-of-batch status: the last one sent.
	hdrLastSeq = jetstream.LastSequenceHeader
)

// Statuses of direct get replies.
const (
	statusEOB          = "204" // end of batch
	statusNotFound     = "404" // nothing at or after the start
	statusNoResponders = "503"
)

// directReader reads one room's messages from stream ROOMS with batched
// direct gets: each request names the room's subject (`next_by_subj`), a
// start (sequence, or store time for the first), a batch size and a byte cap,
// and the server answers straight from the stream's store — its per-subject
// index finds the room's messages, so the cost grows with the room's own
// messages since the cursor, never with the stream. Unlike a consumer it
// needs no create/delete round trips and no consumer state on the server.
//
// Only for a stream with one replica: a replicated stream's followers answer
// direct gets too, and one that lags could leave out the newest messages. The
// service uses the consumer reader then.
type directReader struct {
	nc      *nats.Conn
	subject string // $JS.API.DIRECT.GET.<stream>
}

func newDirectReader(nc *nats.Conn, stream string) directReader {
	return directReader{nc: nc, subject: jetstream.DefaultAPIPrefix + "DIRECT.GET." + stream}
}

// read has the contract of reader.read. want is how many messages the caller
// expects to visit (its page size): the first batch asks for a little more
// than that, later ones for twice as many each, up to chunk.
func (r directReader) read(ctx context.Context, subject string, st start, b budget, want int, visit func(stored) bool) (readResult, error) {
	var res readResult
	ctx, cancel := context.WithDeadline(ctx, b.deadline)
	defer cancel()
	inbox := r.nc.NewInbox()
	sub, err := r.subscribe(inbox, chunk+8)
	if err != nil {
		return res, fmt.Errorf("read %s: subscribe: %w", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	req := directGetRequest{NextFor: subject}
	switch {
	case !st.byTime:
		req.Seq = st.afterSeq + 1
	case st.at.IsZero():
		// seq 0 with next_by_subj: the subject's first message.
	default:
		at := st.at.UTC()
		req.StartTime = &at
	}
	batch := max(1, want+1) // one more than a page, to see whether there is more
	for {
		if res.cut = b.spent(res.scanned, res.bytes, true); res.cut != cutNone {
			return res, nil
		}
		req.Batch = min(batch, chunk, b.maxScan-res.scanned)
		req.MaxBytes = b.maxBytes - res.bytes
		batch = min(2*batch, chunk)
		data, err := json.Marshal(req)
		if err != nil {
			return res, fmt.Errorf("read %s: %w", subject, err)
		}
		if err := r.nc.PublishRequest(r.subject, inbox, data); err != nil {
			return res, fmt.Errorf("read %s: direct get: %w", subject, err)
		}
		next, err := batchReplies(ctx, sub, "", subject, b, &res, visit)
		if err != nil || next == 0 {
			return res, err
		}
		req.Seq, req.StartTime = next, nil
	}
}

// batchReplies receives one batched direct get's replies (on reply, or on
// whatever the subscription gets when reply is ""): the batch's messages in
// stream order, each naming the one sent before it, visited and counted in
// res, then the end-of-batch status naming the last one. It returns the
// sequence the next batch starts at when the room has more, 0 when the read
// is over (nothing more, or res.cut says why it stopped).
func batchReplies(ctx context.Context, sub replies, reply, subject string, b budget, res *readResult, visit func(stored) bool) (uint64, error) {
	var prev uint64
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			return 0, errNoDirect // nats.go turns the 503 status into this
		}
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) && time.Until(b.deadline) <= 0 {
				res.cut = cutTime
				return 0, nil
			}
			return 0, fmt.Errorf("read %s: direct get: %w", subject, err)
		}
		if reply != "" && m.Subject != reply {
			res.cut = cutGap // a reply was lost: stop before the hole
			return 0, nil
		}
		switch status := m.Header.Get(hdrStatus); status {
		case "":
		case statusEOB:
			if proto.StreamHeader(m.Header, hdrLastSeq) != strconv.FormatUint(prev, 10) {
				res.cut = cutGap // the batch's last message was lost
				return 0, nil
			}
			np, err := strconv.ParseUint(proto.StreamHeader(m.Header, hdrNumPending), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read %s: direct get: end of batch: %s: %w", subject, hdrNumPending, err)
			}
			if np == 0 || prev == 0 {
				// Nothing more stored for the room (an empty batch cannot
				// happen with messages pending; stop rather than loop).
				return 0, nil
			}
			return prev + 1, nil
		case statusNotFound:
			// Nothing at or after the start: the read is over.
			return 0, nil
		case statusNoResponders:
			return 0, errNoDirect
		default:
			return 0, fmt.Errorf("read %s: direct get: status %s %s", subject, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(proto.StreamHeader(m.Header, jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("read %s: direct get: %s: %w", subject, jetstream.SequenceHeader, err)
		}
		if proto.StreamHeader(m.Header, hdrLastSeq) != strconv.FormatUint(prev, 10) {
			// A reply was lost between server and client: stop before
			// the hole, the continuation cursor picks it up.
			res.cut = cutGap
			return 0, nil
		}
		prev = seq
		if !visit(stored{Seq: seq, Data: m.Data, At: storeTime(m.Header)}) {
			res.cut = cutLimit
			return 0, nil
		}
		res.scanned++
		res.bytes += len(m.Data)
	}
}

// subscribe subscribes to a request's replies, with room for size of them.
// Not SubscribeSync, whose channel of 65,536 pointers (512 KiB zeroed per
// request) cost more than the reads: a read has at most a window of messages
// (chunk) and their statuses in flight at once; more would be a protocol
// error, seen as a gap.
func (r directReader) subscribe(subject string, size int) (replies, error) {
	ch := make(chan *nats.Msg, size)
	sub, err := r.nc.ChanSubscribe(subject, ch)
	return replies{sub: sub, ch: ch}, err
}

// replies is a subscription to a request's replies.
type replies struct {
	sub *nats.Subscription
	ch  chan *nats.Msg
}

func (r replies) Unsubscribe() error { return r.sub.Unsubscribe() }

// NextMsgWithContext is the next reply, or ctx's error.
func (r replies) NextMsgWithContext(ctx context.Context) (*nats.Msg, error) {
	select {
	case m := <-r.ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// storeTime is the store time a direct get's reply carries (the server's
// Nats-Time-Stamp, not a copy a publisher stored); now when it has none, as
// the gateway does for a live message.
func storeTime(h nats.Header) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, proto.StreamHeader(h, jetstream.TimeStampHeaer)); err == nil {
		return t
	}
	return time.Now()
}

// Batched runs: where the index shows a room's messages close together (a
// burst), one batched direct get from the first of them walks the room's
// subject across the run and answers them all, instead of one request each.
// The server's cost of a batch is its walk: every stream message from the
// run's start to its end (walkGap bounds the distance between two of the
// room's messages in a run), plus, once per batch, a count of the room's
// messages from the start to the end of the start's block (NumPending),
// which walks that part of the block message by message: a run is batched
// only when it starts within walkReach of the newest sequence the index has
// seen, which bounds that count. One direct get of a sequence costs the
// server a JSON decode, a lookup and a reply; measured here, about what a
// walk of a few dozen messages costs.
const (
	walkGap   = 32
	walkReach = 4096
)

// run is a stretch of an index lookup's sequences fetched by one request:
// seqs[first : first+n].
type run struct{ first, n int }

// plan cuts seqs into runs: a batch where the sequences are close together
// and near the end of the stream (newest, as the index knows it), one
// sequence per request elsewhere. batched false gives one run per sequence.
func plan(seqs []uint64, newest uint64, batched bool) []run {
	var runs []run
	for i := 0; i < len(seqs); {
		n := 1
		if batched && newest >= seqs[i] && newest-seqs[i] <= walkReach {
			for i+n < len(seqs) && n < chunk && seqs[i+n]-seqs[i+n-1] <= walkGap {
				n++
			}
		}
		runs = append(runs, run{first: i, n: n})
		i += n
	}
	return runs
}

// readSeqs visits the messages at seqs (increasing sequences of subject, as
// the index gave them). Runs of them close together near the end of the
// stream are fetched with one batched direct get each (see plan); the others
// with one direct get each. The requests are pipelined: a window of them is
// sent at once and the replies read in order. Each request has a reply
// subject of its own, so a lost reply is seen (cutGap) and the reply needs
// no headers to say which message it is: the requests ask for none (no_hdr),
// which spares the server building them and the client parsing them, the
// larger part of the cost of a small message. That the sequence is the
// room's is the index's word (the server's own headers on the RePublish
// feed; service.read resets the index when the stream is re-created); a
// batch's end-of-batch status names the last sequence it sent, which must be
// the index's. A sequence no longer stored (removed by max age) is skipped.
// A batch whose answer does not match the index (a message removed in the
// middle of it) is given up, and the rest of the room read by the server's
// walk (r.read) from where the batch began: res.toEnd says the read then
// went to the end of the room. want is as in read.
//
// confirm, when not nil, is asked about a sequence the answer says is not
// stored (a replicated stream's follower may lag): it says whether the
// stream's leader has it. Such a read is never batched.
//
// When the index's sequences take one window (the usual case) and tail is
// not nil, the request for the room's messages after *tail (newer than the
// index: its feed may lag the stream) is sent with them, its replies read
// after theirs, and res.toEnd says the read covered it: one round trip
// instead of two.
func (r directReader) readSeqs(ctx context.Context, subject string, seqs []uint64, newest uint64, tail *uint64, b budget, want int, confirm func(context.Context, uint64) (stored, string, bool, error), visit func(stored) bool) (readResult, error) {
	var res readResult
	ctx, cancel := context.WithDeadline(ctx, b.deadline)
	defer cancel()
	inbox := r.nc.NewInbox()
	// In flight at most: a window of messages (chunk), an end-of-batch status
	// per batched run (at most chunk/2), and the newer-than-index batch
	// (chunk and its status).
	sub, err := r.subscribe(inbox+".*", 3*chunk+8)
	if err != nil {
		return res, fmt.Errorf("read %s: subscribe: %w", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	runs := plan(seqs, newest, confirm == nil)
	window := max(1, want+1)
	var req []byte
	var bodies [][]byte
	var times []time.Time // the bodies' store times
	tailReply := ""
	for sent := 0; sent < len(runs) || tailReply != ""; {
		if sent == len(runs) {
			// Everything the index knows is read: now what is newer.
			next, err := batchReplies(ctx, sub, tailReply, subject, b, &res, visit)
			if err != nil || next == 0 {
				res.toEnd = err == nil && res.cut == cutNone
				return res, err
			}
			return r.walkRest(ctx, subject, next-1, b, want, res, visit)
		}
		if res.cut = b.spent(res.scanned, res.bytes, true); res.cut != cutNone {
			return res, nil
		}
		// Runs for about window messages, at least one run.
		end, msgs := sent, 0
		for end < len(runs) && (end == sent || msgs+runs[end].n <= min(window, chunk, b.maxScan-res.scanned)) {
			msgs += runs[end].n
			end++
		}
		window = min(2*window, chunk)
		for j := sent; j < end; j++ {
			ru := runs[j]
			req = strconv.AppendUint(append(req[:0], `{"seq":`...), seqs[ru.first], 10)
			if ru.n > 1 {
				req = append(req, `,"next_by_subj":`...)
				req = strconv.AppendQuote(req, subject)
				req = append(req, `,"batch":`...)
				req = strconv.AppendInt(req, int64(ru.n), 10)
				req = append(req, `,"max_bytes":`...)
				req = strconv.AppendInt(req, int64(max(1, b.maxBytes-res.bytes)), 10)
			}
			req = append(req, `,"no_hdr":true}`...)
			if err := r.nc.PublishRequest(r.subject, inbox+"."+strconv.Itoa(j), req); err != nil {
				return res, fmt.Errorf("read %s: direct get: %w", subject, err)
			}
		}
		if tail != nil && sent == 0 && end == len(runs) {
			data, err := json.Marshal(directGetRequest{Seq: *tail + 1, NextFor: subject, Batch: min(max(1, want+1), chunk), MaxBytes: max(1, b.maxBytes)})
			if err != nil {
				return res, fmt.Errorf("read %s: %w", subject, err)
			}
			tailReply = inbox + ".t"
			if err := r.nc.PublishRequest(r.subject, tailReply, data); err != nil {
				return res, fmt.Errorf("read %s: direct get: %w", subject, err)
			}
		}
		for j := sent; j < end; j++ {
			ru := runs[j]
			reply := inbox + "." + strconv.Itoa(j)
			bodies, times = bodies[:0], times[:0]
		replies:
			for {
				m, err := sub.NextMsgWithContext(ctx)
				if errors.Is(err, nats.ErrNoResponders) {
					return res, errNoDirect
				}
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) && time.Until(b.deadline) <= 0 {
						res.cut = cutTime
						return res, nil
					}
					return res, fmt.Errorf("read %s: direct get: %w", subject, err)
				}
				if m.Subject != reply {
					res.cut = cutGap // a reply was lost: stop before the hole
					return res, nil
				}
				status := m.Header.Get(hdrStatus)
				if ru.n > 1 {
					switch status {
					case "":
						if len(bodies) == ru.n {
							res.cut = cutGap // more than asked for: not an answer to trust
							return res, nil
						}
						bodies, times = append(bodies, m.Data), append(times, storeTime(m.Header))
						continue
					case statusEOB:
						got := len(bodies)
						if got == 0 || proto.StreamHeader(m.Header, hdrLastSeq) != strconv.FormatUint(seqs[ru.first+got-1], 10) {
							// Not the messages the index names (one was
							// removed, or a reply lost): walk from here.
							return r.walkRest(ctx, subject, seqs[ru.first]-1, b, want, res, visit)
						}
						break replies
					case statusNotFound:
						break replies // nothing of the room at or after the run: all removed
					case statusNoResponders:
						return res, errNoDirect
					default:
						return res, fmt.Errorf("read %s: direct get: status %s %s", subject, status, m.Header.Get("Description"))
					}
				}
				switch status {
				case "":
				case statusNotFound:
					if confirm == nil {
						break replies // removed since the index saw it
					}
					lm, subj, found, err := confirm(ctx, seqs[ru.first])
					switch {
					case err != nil:
						return res, fmt.Errorf("read %s: %w", subject, err)
					case !found:
						break replies // removed since the index saw it
					case subj != subject || lm.Seq != seqs[ru.first]:
						return res, fmt.Errorf("read %s: the stream leader has %s at %d", subject, subj, seqs[ru.first])
					}
					bodies, times = append(bodies, lm.Data), append(times, lm.At)
					break replies
				case statusNoResponders:
					return res, errNoDirect
				default:
					return res, fmt.Errorf("read %s: direct get: status %s %s", subject, status, m.Header.Get("Description"))
				}
				bodies, times = append(bodies, m.Data), append(times, storeTime(m.Header))
				break
			}
			for k, data := range bodies {
				if res.scanned >= b.maxScan {
					res.cut = cutScan
					return res, nil
				}
				if !visit(stored{Seq: seqs[ru.first+k], Data: data, At: times[k]}) {
					res.cut = cutLimit
					return res, nil
				}
				res.scanned++
				res.bytes += len(data)
			}
			if len(bodies) < ru.n && len(bodies) > 0 {
				// The batch stopped early: its byte cap.
				if res.cut = b.spent(res.scanned, res.bytes, false); res.cut == cutNone {
					res.cut = cutBytes
				}
				return res, nil
			}
		}
		sent = end
	}
	return res, nil
}

// walkRest finishes a read of the index's sequences that did not match the
// stream: the server walks the room from after afterSeq, with what is left
// of the budget.
func (r directReader) walkRest(ctx context.Context, subject string, afterSeq uint64, b budget, want int, res readResult, visit func(stored) bool) (readResult, error) {
	rest := b
	rest.maxScan -= res.scanned
	rest.maxBytes -= res.bytes
	more, err := r.read(ctx, subject, start{afterSeq: afterSeq}, rest, want, visit)
	more.scanned += res.scanned
	more.bytes += res.bytes
	more.toEnd = true
	return more, err
}
