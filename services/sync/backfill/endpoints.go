package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
)

// Endpoint labels, for metrics and micro endpoint names.
const (
	endpointChanges = "changes"
	endpointChat    = "chat"
)

// How the service reads, as it last learnt from the stream's configuration
// (service.mode).
const (
	modeConsumer   int32 = iota // no direct gets (or not known yet)
	modeDirect                  // direct gets, one replica
	modeReplicated              // direct gets, checked with the leader
)

// Read methods, for metrics.
const (
	readTail     = "tail"     // from memory: the bodies the feed showed (tail.go)
	readDirect   = "direct"   // batched direct gets walking the room's subject
	readIndex    = "index"    // direct gets of the sequences the index knows
	readConsumer = "consumer" // a short-lived consumer
)

// query is a validated history request.
type query struct {
	room  proto.Room
	since *int64 // the since filter, nil for afterSeq
	start start
	limit int
}

// parseQuery decodes and validates the arguments of sync.changes (chat
// false) or sync.chat (chat true). Both argument types have the same shape.
func (s *service) parseQuery(data []byte, chat bool) (query, error) {
	var args proto.ChangesArgs
	if err := json.Unmarshal(data, &args); err != nil {
		return query{}, proto.Errorf(proto.CodeInvalidArgument, "arguments: want {roomName, since | afterSeq, limit?}: %v", err)
	}
	room, err := proto.ParseRoom(args.RoomName)
	if err != nil {
		return query{}, proto.Errorf(proto.CodeInvalidArgument, "roomName: %v", err)
	}
	switch {
	case !room.Kind().Stored():
		return query{}, proto.Errorf(proto.CodeInvalidArgument, "room %s is not stored (client rooms have no history)", room)
	case chat && room.Kind() != proto.KindChat:
		return query{}, proto.Errorf(proto.CodeInvalidArgument, "room %s is not a chat: ask for its changes", room)
	case !chat && room.Kind() == proto.KindChat:
		return query{}, proto.Errorf(proto.CodeInvalidArgument, "room %s is a chat: ask for its messages", room)
	}
	if err := args.Cursor.Validate(); err != nil {
		return query{}, err
	}
	limit := args.Limit
	switch {
	case limit < 0:
		return query{}, proto.Errorf(proto.CodeInvalidArgument, "limit %d: want 1 to %d, or none for %d", limit, s.cfg.MaxLimit, s.cfg.DefaultLimit)
	case limit == 0:
		limit = s.cfg.DefaultLimit
	case limit > s.cfg.MaxLimit:
		limit = s.cfg.MaxLimit
	}
	return query{room: room, since: args.Since, start: startOf(args.Cursor, s.cfg.SkewMargin), limit: limit}, nil
}

// changes answers sync.changes: the latest change of each resource of the
// room since the cursor.
func (s *service) changes(ctx context.Context, data []byte) (any, error) {
	q, err := s.parseQuery(data, false)
	if err != nil {
		return nil, err
	}
	c := newCollapser(q.since, q.limit)
	folded := 0
	res, err := s.read(ctx, endpointChanges, q, func(m stored) bool {
		r, err := parseRecord(q.room, m)
		if err != nil {
			s.refused(q.room, m.Seq, err)
			c.skip(m.Seq)
			folded++
			return true
		}
		if !c.add(r) {
			return false
		}
		folded++
		return true
	})
	if err != nil {
		return nil, err
	}
	out := proto.ChangesResult{Changes: c.changes(), Complete: res.complete}
	if res.cut != cutNone {
		if folded == 0 {
			return nil, proto.Errorf(proto.CodeUnavailable, "reading %s: no progress (%s); retry", q.room, res.cut)
		}
		last := c.last
		out.Next = &proto.Cursor{AfterSeq: &last}
	}
	return out, nil
}

// chat answers sync.chat: the room's envelopes since the cursor, as stored,
// in stream order.
func (s *service) chat(ctx context.Context, data []byte) (any, error) {
	q, err := s.parseQuery(data, true)
	if err != nil {
		return nil, err
	}
	// A reply must fit in one NATS message; keep room for the JSON around
	// the envelopes.
	maxReply := min(s.cfg.MaxBytes, int(s.maxPayload())-16<<10)
	out := proto.ChatResult{Messages: []json.RawMessage{}}
	var (
		last     uint64
		consumed int
		size     int
	)
	res, err := s.read(ctx, endpointChat, q, func(m stored) bool {
		r, err := parseRecord(q.room, m)
		switch {
		case err != nil:
			s.refused(q.room, m.Seq, err)
		case q.since != nil && r.UpdatedAt < *q.since:
			// Read only because of the skew margin: older than the cursor.
		default:
			if len(out.Messages) >= q.limit || (len(out.Messages) > 0 && size+len(m.Data)+1 > maxReply) {
				return false
			}
			// The fetched message's buffer is not reused, so no copy.
			out.Messages = append(out.Messages, json.RawMessage(m.Data))
			size += len(m.Data) + 1
		}
		last = m.Seq
		consumed++
		return true
	})
	if err != nil {
		return nil, err
	}
	out.Complete = res.complete
	if res.cut != cutNone {
		if consumed == 0 {
			return nil, proto.Errorf(proto.CodeUnavailable, "reading %s: no progress (%s); retry", q.room, res.cut)
		}
		out.HasMore = true
		out.Next = &proto.Cursor{AfterSeq: &last}
	}
	return out, nil
}

// pageReads is how many stored messages a page of limit entries takes in:
// as many as it may return, and one more, which for changes may fold into
// an entry already there (and for chat says the page is full).
func pageReads(limit int) int { return limit + 1 }

// answer is what a read of one room found out besides the visited messages.
type answer struct {
	cut      cut
	complete bool
}

// reader reads one room's history from stream ROOMS. It visits, in stream
// order, the messages of rq.subject from rq.start on that the stream held
// when the read began, until visit refuses one (cutLimit) or rq.budget runs
// out; res.cut says why it stopped before the end of the room. ok false:
// it cannot answer this read and visited nothing, and the next reader is
// asked. Every reader gives the stream's answer (TestReadersMatchStream).
type reader interface {
	read(ctx context.Context, rq readRequest, visit func(stored) bool) (res readResult, ok bool, err error)
}

var (
	_ reader = tailReader{}
	_ reader = indexReader{}
	_ reader = walkReader{}
	_ reader = consumerReader{}
)

// namedReader is a reader and its name in the reads metric.
type namedReader struct {
	name string
	reader
}

// readers are the ways to read the stream in its mode (service.mode, learnt
// from the stream's configuration), asked in turn until one answers:
//
//   - one replica: the tail (from memory), the index's sequences (direct
//     gets of exactly the room's messages), the server's walk of the room's
//     subject (batched direct gets);
//   - replicated: the index's sequences with what a follower leaves open
//     asked of the leader, else a consumer (served by the leader);
//   - no direct gets: a consumer.
func (s *service) readers() []namedReader {
	switch s.mode.Load() {
	case modeDirect:
		return []namedReader{{readTail, tailReader{s}}, {readIndex, s.indexDirect}, {readDirect, s.walk}}
	case modeReplicated:
		return []namedReader{{readIndex, s.indexChecked}, {readConsumer, s.consumer}}
	}
	return []namedReader{{readConsumer, s.consumer}}
}

// read runs one bounded read of q's room and checks that the stream still
// reaches back to q's start.
func (s *service) read(ctx context.Context, endpoint string, q query, visit func(stored) bool) (answer, error) {
	// A page takes in at most pageReads(limit) stored messages, wherever
	// the cursor starts: a read costs what it returns, not what the room
	// holds. Changes that collapse (updates of one resource) make a page of
	// fewer entries; its next cursor goes on from there (issue 13.4: a
	// since:0 read of a room of 10,000 updates of 100 tasks read all 10,000
	// for 100 entries). The visitor decides where the page ends, so every
	// way of reading gives the same page; the budget's one more message
	// lets a reader see that one, and stops it fetching further.
	taken := 0
	inner := visit
	visit = func(m stored) bool {
		if taken == pageReads(q.limit) {
			return false
		}
		if !inner(m) {
			return false
		}
		taken++
		return true
	}
	rq := readRequest{
		subject: s.cfg.Store.Subjects.Publish(q.room),
		start:   q.start,
		budget:  budget{maxScan: min(s.cfg.MaxScan, pageReads(q.limit)+1), maxBytes: s.cfg.MaxBytes, deadline: time.Now().Add(s.cfg.MaxTime)},
		want:    pageReads(q.limit),
	}
	var (
		res readResult
		err error
	)
	for _, r := range s.readers() {
		var ok bool
		res, ok, err = r.read(ctx, rq, visit)
		if errors.Is(err, directget.ErrNoResponders) && res.scanned == 0 && res.cut == cutNone {
			s.metrics.reads.WithLabelValues(r.name).Inc() // tried
			s.mode.Store(modeConsumer)
			s.log.Info().Msg("stream does not answer direct gets: reading through a consumer")
			r = namedReader{readConsumer, s.consumer}
			res, ok, err = r.read(ctx, rq, visit)
		}
		if ok || err != nil {
			s.metrics.reads.WithLabelValues(r.name).Inc()
			break
		}
	}
	s.metrics.scanned.WithLabelValues(endpoint).Add(float64(res.scanned))
	if err != nil {
		return answer{}, unavailable(q.room, err)
	}
	if res.cut != cutNone {
		s.metrics.cuts.WithLabelValues(endpoint, string(res.cut)).Inc()
	}
	state := res.state
	if state == nil {
		// Taken after the read, so a removal that raced with it counts.
		stream, err := s.streamInfo(ctx, rq.budget.deadline)
		if err != nil {
			return answer{}, unavailable(q.room, err)
		}
		info := stream.CachedInfo()
		if old, changed := s.learn(info); changed && res.indexed && old != 0 {
			return answer{}, proto.Errorf(proto.CodeUnavailable, "reading %s: stream %s was re-created; retry", q.room, proto.StreamRooms)
		}
		s.removals.observe(info.State)
		state = &info.State
	}
	complete := reachesBack(q.start, *state)
	if !complete {
		s.metrics.incomplete.WithLabelValues(endpoint).Inc()
	}
	return answer{cut: res.cut, complete: complete}, nil
}

// streamInfo is stream ROOMS's info, asked of its leader again when it
// does not answer (none while the stream has no leader: see leaderAgain),
// until deadline, and at least once.
func (s *service) streamInfo(ctx context.Context, deadline time.Time) (jetstream.Stream, error) {
	for wait := leaderAgain; ; wait *= 2 {
		actx, cancel := context.WithTimeout(ctx, wait)
		stream, err := s.js.Stream(actx, proto.StreamRooms)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) || time.Until(deadline) <= 0 {
			return stream, err
		}
	}
}

// learn takes in stream ROOMS's configuration (how to read it) and creation
// time: when the stream is new to the service, or was deleted and created
// again, the index's sequences may name another stream's messages and it is
// reset. It returns the creation time known before, and whether it changed.
func (s *service) learn(info *jetstream.StreamInfo) (old int64, changed bool) {
	switch {
	case !info.Config.AllowDirect:
		s.mode.Store(modeConsumer)
	case info.Config.Replicas > 1:
		s.mode.Store(modeReplicated)
	default:
		s.mode.Store(modeDirect)
	}
	created := info.Created.UnixNano()
	if s.streamCreated.Load() == created {
		return created, false
	}
	s.index.reset()
	s.removals.reset()
	return s.streamCreated.Swap(created), true
}

// unavailable turns a JetStream failure into the error a client sees.
func unavailable(room proto.Room, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return proto.Errorf(proto.CodeUnavailable, "reading %s: stream %s does not exist yet", room, proto.StreamRooms)
	}
	return proto.Errorf(proto.CodeUnavailable, "reading %s: %v", room, err)
}
