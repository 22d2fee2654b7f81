package backfill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
)

// walkReader reads one room's messages from stream ROOMS with batched direct
// gets (proto/directget): each request names the room's subject
// (`next_by_subj`), a start (sequence, or store time for the first), a batch
// size and a byte cap, and the server answers straight from the stream's
// store — its per-subject index finds the room's messages, so the cost grows
// with the room's own messages since the cursor, never with the stream.
// Unlike a consumer it needs no create/delete round trips and no consumer
// state on the server.
//
// Only for a stream with one replica: a replicated stream's followers answer
// direct gets too, and one that lags could leave out the newest messages. The
// service uses the consumer reader then.
type walkReader struct {
	nc      *nats.Conn
	subject string // proto.DirectGetSubject(stream)
}

func newWalkReader(nc *nats.Conn, stream string) walkReader {
	return walkReader{nc: nc, subject: proto.DirectGetSubject(stream)}
}

// read always answers.
func (w walkReader) read(ctx context.Context, rq readRequest, visit func(stored) bool) (readResult, bool, error) {
	res, err := w.walk(ctx, rq, visit)
	return res, true, err
}

// walk has the contract of reader.read. The first batch asks for a little
// more than rq.want, later ones for twice as many each, up to chunk.
func (w walkReader) walk(ctx context.Context, rq readRequest, visit func(stored) bool) (readResult, error) {
	var res readResult
	ctx, cancel := context.WithDeadline(ctx, rq.budget.deadline)
	defer cancel()
	replies, err := directget.Subscribe(w.nc, w.nc.NewInbox(), chunk+8)
	if err != nil {
		return res, fmt.Errorf("read %s: subscribe: %w", rq.subject, err)
	}
	defer replies.Close()

	req := directget.Request{NextBySubject: rq.subject}
	switch st := rq.start; {
	case !st.byTime:
		req.Seq = st.afterSeq + 1
	case st.at.IsZero():
		// seq 0 with next_by_subj: the subject's first message.
	default:
		at := st.at.UTC()
		req.StartTime = &at
	}
	b := rq.budget
	batch := max(1, rq.want+1) // one more than a page, to see whether there is more
	var buf []byte
	for {
		if res.cut = b.spent(res.scanned, res.bytes, true); res.cut != cutNone {
			return res, nil
		}
		req.Batch = min(batch, chunk, b.maxScan-res.scanned)
		req.MaxBytes = b.maxBytes - res.bytes
		batch = min(2*batch, chunk)
		buf = req.AppendJSON(buf[:0])
		if err := w.nc.PublishRequest(w.subject, replies.Subject(), buf); err != nil {
			return res, fmt.Errorf("read %s: direct get: %w", rq.subject, err)
		}
		next, err := receiveBatch(ctx, replies.Next, rq, &res, visit)
		if err != nil || next == 0 {
			return res, err
		}
		req.Seq, req.StartTime = next, nil
	}
}

// receiveBatch receives one batched direct get's replies (each from next):
// the batch's messages in stream order, each naming the one sent before it,
// visited and counted in res, then the end-of-batch status naming the last
// one. It returns the sequence the next batch starts at when the room has
// more, 0 when the read is over (nothing more, or res.cut says why it
// stopped).
func receiveBatch(ctx context.Context, next func(context.Context) (*nats.Msg, error), rq readRequest, res *readResult, visit func(stored) bool) (uint64, error) {
	var batch directget.Batch
	for {
		m, err := next(ctx)
		if errors.Is(err, errReplyLost) {
			res.cut = cutGap // a reply was lost: stop before the hole
			return 0, nil
		}
		if err != nil {
			return 0, rq.waitErr(res, err)
		}
		r, err := batch.Take(m)
		switch {
		case errors.Is(err, directget.ErrLost):
			// The continuation cursor picks up what was lost.
			res.cut = cutGap
			return 0, nil
		case err != nil:
			return 0, fmt.Errorf("read %s: %w", rq.subject, err)
		case r.Done && (r.Pending == 0 || batch.Last() == 0):
			// Nothing more stored for the room (an empty batch cannot
			// happen with messages pending; stop rather than loop).
			return 0, nil
		case r.Done:
			return batch.Last() + 1, nil
		}
		if !visit(stored{Seq: r.Seq, Data: r.Data, At: r.StoreTime()}) {
			res.cut = cutLimit
			return 0, nil
		}
		res.scanned++
		res.bytes += len(r.Data)
	}
}

// waitErr is what waiting for a reply that did not come (err) means: the
// read's time is up (res.cut), or an error.
func (rq readRequest) waitErr(res *readResult, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && time.Until(rq.budget.deadline) <= 0 {
		res.cut = cutTime
		return nil
	}
	return fmt.Errorf("read %s: direct get: %w", rq.subject, err)
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

// run is a stretch of an index lookup's entries fetched by one request:
// entries[first : first+n].
type run struct{ first, n int }

// plan cuts the entries into runs: a batch where the sequences are close
// together and near the end of the stream (newest, as the index knows it),
// one sequence per request elsewhere. batched false gives one run per
// sequence.
func plan(seqs []indexEntry, newest uint64, batched bool) []run {
	var runs []run
	for i := 0; i < len(seqs); {
		n := 1
		if batched && newest >= seqs[i].seq && newest-seqs[i].seq <= walkReach {
			for i+n < len(seqs) && n < chunk && seqs[i+n].seq-seqs[i+n-1].seq <= walkGap {
				n++
			}
		}
		runs = append(runs, run{first: i, n: n})
		i += n
	}
	return runs
}

// indexReader reads the messages the index knows by their sequences
// (readSeqs), then the room's messages newer than the index (its feed may
// lag the stream). It cannot answer a read the index cannot (the room not
// indexed, or its chain not reaching back to the start).
//
// On a replicated stream (leader set) a follower that lags may answer a
// direct get: what it says is not stored is asked of the leader, no run is
// batched, and the newer messages are asked of the leader too.
type indexReader struct {
	index  *index
	walk   walkReader
	leader *leaderGetter
}

func (x indexReader) read(ctx context.Context, rq readRequest, visit func(stored) bool) (readResult, bool, error) {
	known, ok := x.index.lookup(rq.subject, rq.start)
	if !ok {
		return readResult{}, false, nil
	}
	res, err := x.readSeqs(ctx, rq, known, visit)
	res.indexed = true
	if err != nil || res.cut != cutNone || res.toEnd {
		return res, true, err
	}
	// Then the room's messages newer than the index: after its last entry,
	// or, when it knows none from the start on (the cursor is at or past
	// its last entry: the feed may not have shown the newer ones yet), from
	// the start itself, or the messages between the two, before the
	// cursor, would be visited.
	rest := rq.after(known.tail, res)
	after, notBefore := known.tail, time.Time{}
	if len(known.entries) == 0 {
		rest = rq
		if rq.start.byTime {
			notBefore = rq.start.at
		} else {
			after = max(after, rq.start.afterSeq)
		}
	}
	var more readResult
	if x.leader != nil {
		more, err = x.leader.readAfter(ctx, rq.subject, after, notBefore, rest.budget, visit)
	} else {
		more, err = x.walk.walk(ctx, rest, visit)
	}
	return res.then(more), true, err
}

// then is res followed by more: more's outcome, both counts. A read that
// goes on in another way (the walk) has gone to the room's end (toEnd).
func (res readResult) then(more readResult) readResult {
	more.scanned += res.scanned
	more.bytes += res.bytes
	more.indexed = res.indexed
	more.toEnd = true
	return more
}

// after is the rest of rq once res was read: from after seq, with what is
// left of the budget.
func (rq readRequest) after(seq uint64, res readResult) readRequest {
	rq.start = start{afterSeq: seq}
	rq.budget.maxScan -= res.scanned
	rq.budget.maxBytes -= res.bytes
	return rq
}

// readSeqs visits the messages the index names (known.entries: increasing
// sequences of the room, with their store times). It plans runs of them
// (plan: a batched direct get where they are close together near the end
// of the stream, one direct get each elsewhere), sends a window of requests
// at once (send) and visits their replies in the order of the requests
// (receive; on a replicated stream they may arrive in another: next). Each
// request has a reply subject of its own, so the reply needs no headers to
// say which message it is: the requests ask for none (no_hdr), and a lost
// reply is seen (cutGap). That the
// sequence is the room's is the index's word (the server's own headers on
// the RePublish feed; service.read resets the index when the stream is
// re-created); a batch's end-of-batch status names the
// last sequence it sent, which must be the index's. A sequence no longer
// stored (removed by max age) is skipped. A batch whose answer does not
// match the index (a message removed in the middle of it) is given up, and
// the rest of the room read by the server's walk from where the batch
// began: res.toEnd says the read then went to the end of the room.
//
// When the index's sequences take one window (the usual case) on a stream
// of one replica, the request for the room's messages after known.tail
// (newer than the index) is sent with them, its replies read after theirs,
// and res.toEnd says the read covered it: one round trip instead of two.
func (x indexReader) readSeqs(ctx context.Context, rq readRequest, known indexed, visit func(stored) bool) (readResult, error) {
	ctx, cancel := context.WithDeadline(ctx, rq.budget.deadline)
	defer cancel()
	inbox := x.walk.nc.NewInbox()
	// In flight at most: a window of messages (chunk), an end-of-batch status
	// per batched run (at most chunk/2), and the newer-than-index batch
	// (chunk and its status).
	replies, err := directget.Subscribe(x.walk.nc, inbox+".*", 3*chunk+8)
	if err != nil {
		return readResult{}, fmt.Errorf("read %s: subscribe: %w", rq.subject, err)
	}
	defer replies.Close()
	r := &seqRead{indexReader: x, rq: rq, entries: known.entries, inbox: inbox, replies: replies,
		runs: plan(known.entries, known.newest, x.leader == nil)}
	window := max(1, rq.want+1)
	newer := ""
	for sent := 0; sent < len(r.runs); {
		if r.res.cut = rq.budget.spent(r.res.scanned, r.res.bytes, true); r.res.cut != cutNone {
			return r.res, nil
		}
		end := r.window(sent, window)
		window = min(2*window, chunk)
		if err := r.send(sent, end); err != nil {
			return r.res, err
		}
		if x.leader == nil && sent == 0 && end == len(r.runs) {
			if newer, err = r.sendNewer(known.tail); err != nil {
				return r.res, err
			}
		}
		for j := sent; j < end; j++ {
			msgs, mismatch, err := r.receive(ctx, j)
			if err != nil || r.res.cut != cutNone {
				return r.res, err
			}
			if mismatch {
				// Not the messages the index names (one was removed, or a
				// reply lost): the server walks from here.
				more, err := x.walk.walk(ctx, rq.after(r.entries[r.runs[j].first].seq-1, r.res), visit)
				return r.res.then(more), err
			}
			if !r.visitRun(j, msgs, visit) {
				return r.res, nil
			}
		}
		sent = end
	}
	if newer != "" {
		// Everything the index knows is read: now what is newer.
		next, err := receiveBatch(ctx, func(ctx context.Context) (*nats.Msg, error) { return r.next(ctx, newer) }, rq, &r.res, visit)
		if err != nil || next == 0 {
			r.res.toEnd = err == nil && r.res.cut == cutNone
			return r.res, err
		}
		more, err := x.walk.walk(ctx, rq.after(next-1, r.res), visit)
		return r.res.then(more), err
	}
	return r.res, nil
}

// seqRead is one readSeqs in progress.
type seqRead struct {
	indexReader
	rq      readRequest
	entries []indexEntry
	runs    []run
	inbox   string
	replies *directget.Replies
	res     readResult
	req     []byte   // the request being built
	msgs    []stored // the run being received
	// The runs whose requests are sent and not yet received are
	// receiving+1 to sent-1; early holds what came of their replies
	// before their turn, late the reply subjects of runs read from the
	// leader instead (next).
	receiving, sent int
	early           map[string][]*nats.Msg
	late            map[string]bool
}

// window is where the window of requests that starts at run from ends: runs
// for about n messages, at least one run.
func (r *seqRead) window(from, n int) int {
	end, msgs := from, 0
	for end < len(r.runs) && (end == from || msgs+r.runs[end].n <= min(n, chunk, r.rq.budget.maxScan-r.res.scanned)) {
		msgs += r.runs[end].n
		end++
	}
	return end
}

// reply is the reply subject of run j's request.
func (r *seqRead) reply(j int) string { return r.inbox + "." + strconv.Itoa(j) }

// send sends the requests of runs from to to-1.
func (r *seqRead) send(from, to int) error {
	r.sent = to
	for j := from; j < to; j++ {
		ru := r.runs[j]
		req := directget.Request{Seq: r.entries[ru.first].seq, NoHeaders: true}
		if ru.n > 1 {
			req.NextBySubject, req.Batch, req.MaxBytes = r.rq.subject, ru.n, max(1, r.rq.budget.maxBytes-r.res.bytes)
		}
		r.req = req.AppendJSON(r.req[:0])
		if err := r.walk.nc.PublishRequest(r.walk.subject, r.reply(j), r.req); err != nil {
			return fmt.Errorf("read %s: direct get: %w", r.rq.subject, err)
		}
	}
	return nil
}

// sendNewer sends the request for the room's messages after tail (a
// batch, with headers: the index does not know them); it returns its
// reply subject.
func (r *seqRead) sendNewer(tail uint64) (string, error) {
	req := directget.Request{Seq: tail + 1, NextBySubject: r.rq.subject, Batch: min(max(1, r.rq.want+1), chunk), MaxBytes: max(1, r.rq.budget.maxBytes)}
	reply := r.inbox + ".t"
	if err := r.walk.nc.PublishRequest(r.walk.subject, reply, req.AppendJSON(nil)); err != nil {
		return "", fmt.Errorf("read %s: direct get: %w", r.rq.subject, err)
	}
	return reply, nil
}

// next's answers when the awaited reply does not come: errReplyLost when
// another came that cannot come before it (a reply lost on the way),
// errReplyLate when (replicated) none at all came for replyLate.
var (
	errReplyLost = errors.New("a reply lost")
	errReplyLate = errors.New("no reply in time")
)

// replyLate is how long a read of a replicated stream waits with no reply
// at all before it asks the leader for the awaited one. A replica answers
// a direct get in well under a millisecond; a request taken by a replica
// whose server then shut down is never answered, and waiting for it the
// read's whole time (2 s) outlasted the gateway's own wait.
const replyLate = 250 * time.Millisecond

// next is the next reply to reply (run j's, or the newer batch's).
//
// One server answers each request, its replies in order. On a stream of
// one replica it answers them all, so a reply to a later request means
// this one's was lost (errReplyLost). On a replicated stream the direct gets
// of a window are shared: the client's server answers them itself while
// its replica is caught up, else (a follower catching up or restarted, a
// leader change; seconds after a node stops) each goes over a route to
// one of the others, chosen per request, and a later request's replies
// may come first: they are kept until their run's turn, and when nothing
// comes for replyLate the awaited one is errReplyLate (receiveRun asks the
// leader, and drops the reply if it comes after all). A reply to no
// request in flight is errReplyLost either way.
func (r *seqRead) next(ctx context.Context, reply string) (*nats.Msg, error) {
	if q := r.early[reply]; len(q) > 0 {
		r.early[reply] = q[1:]
		return q[0], nil
	}
	for {
		m, err := r.nextReply(ctx)
		switch {
		case err != nil:
			return nil, err
		case m.Subject == reply:
			return m, nil
		case r.late[m.Subject]:
			continue // its run was read from the leader
		case r.leader == nil || !r.inFlight(m.Subject):
			return nil, errReplyLost
		}
		if r.early == nil {
			r.early = map[string][]*nats.Msg{}
		}
		r.early[m.Subject] = append(r.early[m.Subject], m)
	}
}

// nextReply is the next reply to any request of the read; on a replicated
// stream errReplyLate when none comes for replyLate.
func (r *seqRead) nextReply(ctx context.Context) (*nats.Msg, error) {
	if r.leader == nil {
		return r.replies.Next(ctx)
	}
	wctx, cancel := context.WithTimeout(ctx, replyLate)
	defer cancel()
	m, err := r.replies.Next(wctx)
	if err != nil && ctx.Err() == nil {
		return nil, errReplyLate
	}
	return m, err
}

// inFlight reports whether subject is the reply subject of a run whose
// request is sent and whose turn has not come.
func (r *seqRead) inFlight(subject string) bool {
	k, ok := strings.CutPrefix(subject, r.inbox+".")
	if !ok {
		return false
	}
	j, err := strconv.Atoi(k)
	return err == nil && j > r.receiving && j < r.sent
}

// receive reads the replies to run j's request: its messages (fewer than
// the run when a batch's byte cap stopped it, or some were removed), or
// mismatch when a batch's answer is not the index's messages. r.res.cut
// says when the read must stop (time up, a reply lost).
func (r *seqRead) receive(ctx context.Context, j int) (msgs []stored, mismatch bool, err error) {
	r.receiving = j
	msgs, mismatch, err = r.receiveRun(ctx, j)
	if len(r.early[r.reply(j)]) > 0 && err == nil && !mismatch && r.res.cut == cutNone {
		r.res.cut = cutGap // more than asked for, come early: not an answer to trust
		return nil, false, nil
	}
	delete(r.early, r.reply(j))
	return msgs, mismatch, err
}

// receiveRun has the contract of receive.
func (r *seqRead) receiveRun(ctx context.Context, j int) (msgs []stored, mismatch bool, err error) {
	ru := r.runs[j]
	reply := r.reply(j)
	msgs = r.msgs[:0]
	defer func() { r.msgs = msgs[:0] }()
	for {
		m, err := r.next(ctx, reply)
		if errors.Is(err, errReplyLate) && ru.n == 1 && len(msgs) == 0 {
			// The replica that took the request has not answered (its
			// server stopping?): the leader answers instead.
			if r.late == nil {
				r.late = map[string]bool{}
			}
			r.late[reply] = true
			return r.fromLeader(ctx, ru, msgs)
		}
		if errors.Is(err, errReplyLost) || errors.Is(err, errReplyLate) {
			r.res.cut = cutGap // a reply was lost: stop before the hole
			return nil, false, nil
		}
		if err != nil {
			return nil, false, r.rq.waitErr(&r.res, err)
		}
		status, err := directget.Status(m)
		if err != nil {
			return nil, false, fmt.Errorf("read %s: %w", r.rq.subject, err)
		}
		switch status {
		case "":
			if len(msgs) == ru.n {
				r.res.cut = cutGap // more than asked for: not an answer to trust
				return nil, false, nil
			}
			e := r.entries[ru.first+len(msgs)]
			msgs = append(msgs, stored{Seq: e.seq, Data: m.Data, At: time.Unix(0, e.ts)})
			if ru.n == 1 {
				return msgs, false, nil
			}
		case directget.StatusEndOfBatch:
			last, err := directget.EndOfBatch(m)
			if err != nil || len(msgs) == 0 || last != r.entries[ru.first+len(msgs)-1].seq {
				return nil, true, nil
			}
			return msgs, false, nil
		case directget.StatusNotFound:
			// Nothing of the room at or after the run: all removed since
			// the index saw it, unless a lagging follower answered.
			if ru.n > 1 || r.leader == nil {
				return msgs, false, nil
			}
			return r.fromLeader(ctx, ru, msgs)
		}
	}
}

// fromLeader asks the stream's leader for run ru's one message (a
// replicated stream's runs are single sequences).
func (r *seqRead) fromLeader(ctx context.Context, ru run, msgs []stored) ([]stored, bool, error) {
	e := r.entries[ru.first]
	lm, subj, found, err := r.leader.get(ctx, e.seq, "")
	switch {
	case err != nil:
		return nil, false, fmt.Errorf("read %s: %w", r.rq.subject, err)
	case !found:
		return msgs, false, nil
	case subj != r.rq.subject || lm.Seq != e.seq:
		return nil, false, fmt.Errorf("read %s: the stream leader has %s at %d", r.rq.subject, subj, e.seq)
	}
	return append(msgs, lm), false, nil
}

// visitRun visits run j's messages; false when the read stops (res.cut).
func (r *seqRead) visitRun(j int, msgs []stored, visit func(stored) bool) bool {
	b := r.rq.budget
	for _, m := range msgs {
		if r.res.scanned >= b.maxScan {
			r.res.cut = cutScan
			return false
		}
		if !visit(m) {
			r.res.cut = cutLimit
			return false
		}
		r.res.scanned++
		r.res.bytes += len(m.Data)
	}
	if len(msgs) < r.runs[j].n && len(msgs) > 0 {
		// The batch stopped early: its byte cap.
		if r.res.cut = b.spent(r.res.scanned, r.res.bytes, false); r.res.cut == cutNone {
			r.res.cut = cutBytes
		}
		return false
	}
	return true
}
