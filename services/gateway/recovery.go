package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
)

// Connection state recovery (docs/decisions.md, "Recovery"). A socket's
// CONNECT answer carries a pid, and every stored room's broadcast its
// stream sequence as an offset. When the socket is cut (not closed at
// the client's or the server's will), the gateway writes a record of the
// session to KV SESSIONS under its pid; a client that comes back with
// {pid, offset}, on any gateway, gets its rooms back and every broadcast
// it missed, read again from stream ROOMS.
//
// The order that places a client's offset is in recovery_order.go, the
// reading of what it missed in recovery_read.go.

// session is a socket's recovery state, when recovery is on.
type session struct {
	// pid is the session's recovery id, "" until connect sets it (under
	// the socket's mu, as its user).
	pid   string
	order order
	// holding: the socket is replaying what it missed; live broadcasts
	// wait in held (under hold) until the replay is queued.
	holding atomic.Bool
	hold    sync.Mutex
	held    *[]engineio.Message // behind a pointer: rare, and 16 bytes of every socket
}

// holdBack keeps m for after the replay, unless the replay is over; it
// reports whether it kept it.
func (ss *session) holdBack(m *engineio.Message) bool {
	ss.hold.Lock()
	defer ss.hold.Unlock()
	if !ss.holding.Load() {
		return false
	}
	if ss.held == nil {
		ss.held = new([]engineio.Message)
	}
	*ss.held = append(*ss.held, engineio.Message{Frame: m.Frame, Threshold: m.Threshold, Seq: m.Seq, Room: m.Room})
	return true
}

// sessions is the gateway's side of KV SESSIONS.
type sessions struct {
	kv    jetstream.KeyValue
	js    jetstream.JetStream
	first firstSeqs
	// records and rooms batch recoveries' multi_last reads of KV SESSIONS
	// (their records) and of ROOMS (their rooms' last messages); ranges
	// shares their reads of a room's missed broadcasts.
	records, rooms lastReads
	ranges         rangeReads
}

// bindSessions binds KV SESSIONS, creating it when missing (with
// RecoveryTTL), and the publisher that writes records without waiting.
func (g *Gateway) bindSessions(ctx context.Context) error {
	js, err := jetstream.New(g.nc,
		jetstream.WithPublishAsyncMaxPending(1<<14),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			g.m.sessionWrites.WithLabelValues("failed").Inc()
			g.log.Warn().Err(err).Str("subject", m.Subject).Msg("a session record was not stored: that session cannot be recovered")
		}))
	if err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	kv, err := js.KeyValue(bctx, proto.BucketSessions)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(bctx, g.cfg.Store.SessionsBucket())
	}
	if err != nil {
		return fmt.Errorf("bucket %s: %w", proto.BucketSessions, err)
	}
	if st, err := kv.Status(bctx); err == nil && st.TTL() != g.cfg.RecoveryTTL {
		g.log.Warn().Dur("bucket_ttl", st.TTL()).Dur("recovery_ttl", g.cfg.RecoveryTTL).
			Msg(proto.BucketSessions + " keeps sessions for another time than ROOMCAST_RECOVERY_TTL: the bucket's TTL is the one that counts")
	}
	g.sessions = &sessions{kv: kv, js: js,
		records: lastReads{stream: proto.KVStream(proto.BucketSessions), where: "sessions"},
		rooms:   lastReads{stream: proto.StreamRooms, where: "replay"},
		ranges:  rangeReads{limit: rangeBytes}}
	// Where the stream stands: the floor of what a socket joins before
	// the fan-out delivers anything (after a restart, above all).
	if st, err := js.Stream(bctx, proto.StreamRooms); err == nil {
		g.startSeq = st.CachedInfo().State.LastSeq
		g.seenSeq(g.startSeq)
	} else {
		// Not made yet (/readyz says so): the fan-out raises it.
		g.log.Warn().Err(err).Msg("stream " + proto.StreamRooms + " not found: the first sockets' rooms start at 0")
	}
	return nil
}

// saveSession writes s's record, without waiting: the socket was cut, and
// its client may come back for it. Called once, as the socket closes.
func (g *Gateway) saveSession(s *socket, rooms []string) {
	ss := s.sess
	rec := sessionRecord{User: s.user, SID: s.id}
	for _, key := range rooms {
		if r, err := proto.ParseRoom(key); err == nil && r.Kind() != proto.KindUser && r.Kind() != proto.KindClient {
			rec.Rooms = append(rec.Rooms, key)
		}
	}
	o := &ss.order
	o.mu.Lock()
	rec.Start, rec.Max, rec.Lost = o.start, o.max, o.lost
	rec.Inv = append([]inversion(nil), o.inv...)
	rec.Pos = append([]roomPos(nil), o.rooms...)
	o.mu.Unlock()
	b, err := json.Marshal(rec)
	if err != nil {
		return // strings and numbers: cannot fail
	}
	if _, err := g.sessions.js.PublishAsync(proto.KVSubject(proto.BucketSessions, ss.pid), b); err != nil {
		g.m.sessionWrites.WithLabelValues("failed").Inc()
		g.log.Warn().Err(err).Str("socket", s.id).Msg("a session record was not stored: that session cannot be recovered")
		return
	}
	g.m.sessionWrites.WithLabelValues("written").Inc()
	g.m.sessionBytes.Add(float64(len(b)))
}

// loadSession reads pid's record for user; result says why there is none
// usable ("" when there is).
func (g *Gateway) loadSession(ctx context.Context, pid, user string) (*sessionRecord, string) {
	if proto.ValidateID(pid) != nil {
		return nil, recoverUnknown
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	value, err := g.readRecord(ctx, pid)
	if err != nil {
		g.log.Warn().Err(err).Msg("could not read a session record: a new session instead")
		return nil, recoverFailed
	}
	if value == nil {
		return nil, recoverUnknown
	}
	var rec sessionRecord
	if err := json.Unmarshal(value, &rec); err != nil || proto.ValidateID(rec.SID) != nil {
		return nil, recoverUnknown // not a record a gateway wrote
	}
	if rec.User != user {
		return nil, recoverOtherUser
	}
	return &rec, ""
}

// forgetSession deletes pid's record once it was recovered: a pid is
// recovered once (the new socket writes its own record when it is cut).
func (g *Gateway) forgetSession(pid string) {
	m := nats.NewMsg(proto.KVSubject(proto.BucketSessions, pid))
	m.Header.Set(kvOperation, "DEL")
	if _, err := g.sessions.js.PublishMsgAsync(m); err != nil {
		g.log.Warn().Err(err).Msg("could not delete a recovered session's record")
	}
}

// subscribedBefore says whether every room of rooms that has its own
// subscriptions here had them at epoch.
func (g *Gateway) subscribedBefore(epoch uint64, rooms []proto.Room) bool {
	for _, r := range rooms {
		if e := g.subscribedAt(r.Parent()); e > epoch {
			return false
		}
	}
	return true
}

// kvOperation is the header a KV delete carries.
const kvOperation = "KV-Operation"

// recoveryPlan is a recovery checked before the socket takes the
// session's identity: where its client stood (m), each room's first
// broadcast to replay (from), and the rooms to join again.
type recoveryPlan struct {
	m     uint64
	from  map[string]uint64
	rooms []proto.Room
	// read is what was read of the stream before the socket took the
	// session's id; restoreSession reads what came after. seen is the
	// highest sequence the fan-out had seen when that read began, epoch
	// the gateway's subscription count then.
	read        *replayRead
	seen, epoch uint64
}

// planRecovery checks that rec can be recovered for user, whose client's
// last offset is offset: the offset placed, every room still allowed, the
// stream still holding what was missed. It returns the result label when
// not (the client gets a new session).
func (g *Gateway) planRecovery(ctx context.Context, user string, rec *sessionRecord, offset string) (*recoveryPlan, string) {
	began := time.Now()
	m, missed, err := rec.resume(offset)
	if err != nil {
		return nil, recoverBadOffset
	}
	p := &recoveryPlan{m: m, from: rec.starts(m, missed)}
	for _, key := range rec.Rooms {
		r, err := proto.ParseRoom(key)
		if err != nil {
			return nil, recoverUnknown // not a record this gateway wrote
		}
		if err := g.authorizeUser(ctx, user, r); err != nil {
			if pe := (*proto.Error)(nil); errors.As(err, &pe) && pe.Code == proto.CodeForbidden {
				return nil, recoverForbidden
			}
			g.log.Warn().Err(err).Str("room", r.Name()).Msg("could not authorize a recovering socket's room again: a new session instead")
			return nil, recoverFailed
		}
		p.rooms = append(p.rooms, r)
	}
	first, err := g.streamFirstSeq(ctx, began)
	if err != nil {
		g.log.Warn().Err(err).Msg("could not read stream " + proto.StreamRooms + "'s first sequence for a recovery: a new session instead")
		return nil, recoverFailed
	}
	for _, f := range p.from {
		if f < first {
			return nil, recoverHistoryCut
		}
	}
	// Read what was missed now, before the socket takes the session's
	// id: too much is a new session with a new id. What the stream
	// stores from here until the socket is back in its rooms,
	// restoreSession reads.
	p.read = g.newReplayRead(user, rec, p.from)
	p.seen, p.epoch = g.highSeq.Load(), g.subEpoch.Load()
	if err := p.read.first(ctx); err != nil {
		if errors.Is(err, errTooMuch) {
			return nil, recoverTooMuch
		}
		g.log.Warn().Err(err).Msg("could not read what a recovering socket missed: a new session instead")
		return nil, recoverFailed
	}
	return p, ""
}

// restoreSession puts s (connected as the session, in its personal rooms,
// holding its live broadcasts) back in the plan's rooms and reads what it
// missed, for sendRestored; subscribed: joining its personal rooms made a
// subscription. It returns the result label; on any but recovered, s is
// left in its personal rooms only, as a new session is, and the caller
// releases what it held.
func (g *Gateway) restoreSession(ctx context.Context, s *socket, p *recoveryPlan, subscribed bool) (string, []replayed) {
	flush := subscribed
	for i, r := range p.rooms {
		created, err := g.join(s, r)
		if err != nil {
			for _, r := range p.rooms[:i] {
				g.leave(s, r)
			}
			return recoverFailed, nil
		}
		flush = flush || created
	}
	leaveAll := func() {
		for _, r := range p.rooms {
			g.leave(s, r)
		}
	}
	if flush {
		if err := g.nc.FlushTimeout(g.cfg.RequestTimeout); err != nil {
			leaveAll()
			return recoverFailed, nil
		}
	}
	// The rooms' subscriptions are in: what the stream stores from now on
	// comes live (held); what it stored since the first read, the second.
	// Unless every room was subscribed here before the first read began
	// and the fan-out has seen nothing since: then the stream stored
	// nothing of them in between (this gateway sees every message of a
	// room it is subscribed to), and the second read is spared (a
	// reconnect storm, which publishes nothing).
	more := p.read.more
	userRoom, _ := proto.UserRoom(s.user) // validated at CONNECT
	if !flush && g.highSeq.Load() == p.seen && g.subscribedBefore(p.epoch, append(p.rooms, userRoom)) {
		more = p.read.done
	}
	msgs, err := more(ctx)
	if err != nil {
		leaveAll()
		if errors.Is(err, errTooMuch) {
			return recoverTooMuch, nil
		}
		g.log.Warn().Err(err).Msg("could not read what a recovering socket missed: a new session instead")
		return recoverFailed, nil
	}
	s.sess.order.resumeAt(p.m, p.from)
	return recovered, msgs
}

// streamFirstSeq is the first sequence stream ROOMS still holds: what is
// below it is gone (max age), and a replay from there is impossible. The
// first sequence only grows, so any read begun at or after since (when
// the caller's recovery began) answers as well as its own. One read is in
// flight at a time: a caller that the read in flight cannot answer (it
// began before the caller did) waits for the next, which begins when that
// one ends and answers everyone who came meanwhile. A storm of recoveries
// makes a read per round trip, not one per socket.
func (g *Gateway) streamFirstSeq(ctx context.Context, since time.Time) (uint64, error) {
	f := &g.sessions.first
	f.mu.Lock()
	r := f.last
	if r == nil || r.began.Before(since) {
		if f.next == nil {
			f.next = &firstSeqRead{done: make(chan struct{})}
			if r == nil || r.ended {
				g.beginFirstSeqRead() // r is over: no need to wait for it
			}
		}
		r = f.next
		if r == nil {
			r = f.last // begun just now
		}
	}
	f.mu.Unlock()
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// beginFirstSeqRead begins the next read (f.next), in a goroutine of its
// own: no caller's context ends it for the others. Called with f.mu held.
func (g *Gateway) beginFirstSeqRead() {
	f := &g.sessions.first
	r := f.next
	f.next, f.last = nil, r
	r.began = time.Now()
	go func() {
		r.err = errors.New("reading stream " + proto.StreamRooms + "'s first sequence: panicked")
		g.guard.Do("firstseq", func() { // a panic fails this read's waiters, not the next read
			g.hook("firstseq")
			ctx, cancel := context.WithTimeout(context.Background(), g.cfg.RequestTimeout)
			defer cancel()
			st, err := g.sessions.js.Stream(ctx, proto.StreamRooms)
			if r.err = err; err == nil {
				r.seq = st.CachedInfo().State.FirstSeq
			}
		})
		f.mu.Lock()
		r.ended = true
		close(r.done)
		if f.next != nil {
			g.beginFirstSeqRead()
		}
		f.mu.Unlock()
	}()
}

// firstSeqs is the last read of ROOMS's first sequence begun, and the
// next, which its waiters wait to begin (streamFirstSeq).
type firstSeqs struct {
	mu         sync.Mutex
	last, next *firstSeqRead
}

type firstSeqRead struct {
	began time.Time
	ended bool          // under firstSeqs.mu
	done  chan struct{} // closed when seq and err are set
	seq   uint64
	err   error
}

// sendRestored queues, after the CONNECT answer, what s missed, then the
// live broadcasts held meanwhile that the replay did not already hold,
// and lets the next ones through.
func (s *socket) sendRestored(restored []replayed) {
	threshold := s.gw.cfg.DeflateThreshold
	lastOf := map[string]uint64{}
	ms := make([]engineio.Message, len(restored))
	for i, r := range restored {
		ms[i] = engineio.Message{Frame: appendBroadcastFrame(r.room, r.data, r.seq, r.prev, true), Threshold: threshold, Seq: r.seq, Room: r.room}
		lastOf[r.room] = r.seq
	}
	s.gw.m.replayed.Add(float64(len(restored)))
	s.releaseHeld(ms, func(m *engineio.Message) bool {
		if m.Seq == 0 {
			return true
		}
		last, ok := lastOf[m.Room]
		return !ok || m.Seq > last
	})
}

// releaseHeld queues first, then the held broadcasts that keep says to,
// and ends the holding: from now on broadcasts are queued as they come.
func (s *socket) releaseHeld(first []engineio.Message, keep func(*engineio.Message) bool) {
	ss := s.sess
	ss.hold.Lock()
	t := s.transport()
	writer := false
	for i := range first {
		_, start := t.QueueOrdered(&first[i], &ss.order)
		writer = writer || start
	}
	var held []engineio.Message
	if ss.held != nil {
		held = *ss.held
	}
	for i := range held {
		if m := &held[i]; keep(m) {
			_, start := t.QueueOrdered(m, &ss.order)
			writer = writer || start
		}
	}
	ss.held = nil
	ss.holding.Store(false)
	ss.hold.Unlock()
	if writer {
		t.Write()
	}
}

// seenSeq raises the highest stream sequence the fan-out has seen, the
// floor of a room a socket joins now.
func (g *Gateway) seenSeq(seq uint64) {
	for {
		cur := g.highSeq.Load()
		if seq <= cur || g.highSeq.CompareAndSwap(cur, seq) {
			return
		}
	}
}
