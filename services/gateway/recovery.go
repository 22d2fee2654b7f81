package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
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
// The offset is the same bytes for every member, so it cannot say where
// each of a socket's rooms stood: a socket's rooms are fanned out by
// different workers, and the client may get room A's 105 before room B's
// 103. What the client got is told by the offset together with the order
// the socket's broadcasts were queued in, which the socket keeps (order):
// the highest sequence queued, the broadcasts queued below it
// (inversions, rare while one worker at a time feeds a socket), and per
// room the last queued. A socket's queue is sent in order, so the client
// got exactly what was queued up to and including its offset.

// maxInversions bounds the inversions a socket keeps. When one is
// forgotten, an offset from before it can no longer be placed: that
// client gets a new session.
const maxInversions = 256

// order is a socket's account of the stored rooms' broadcasts queued to
// it (engineio.Orderer), in queue order. mu is a leaf: Queued runs under
// the transport's lock (locksordering.txt).
type order struct {
	mu sync.Mutex
	// start is the session's position when it began: every stored
	// broadcast queued since is either above it or an inversion.
	start uint64
	max   uint64      // the highest sequence queued
	inv   []inversion // queued below max at the time, oldest first
	lost  uint64      // the highest max of an inversion forgotten (0: none)
	rooms []roomPos   // per room name, where it stood
}

// inversion is a broadcast queued while a higher sequence had already
// been (Max): only an offset that names it, or one at or below Max,
// places it.
type inversion struct {
	Seq  uint64 `json:"s"`
	Max  uint64 `json:"m"`
	Room string `json:"r"`
}

// roomPos is where one room (by name: board-B-tasks apart from board-B)
// stands for a socket: Floor, what it held when it joined (nothing at or
// below is replayed); Last, the last of its broadcasts queued. A room
// that shares its parent's list (a board's tasks and sprints) has an
// entry only once it differs from its parent's: most sockets keep one
// per room they joined (32 bytes), not one per name.
type roomPos struct {
	Name  string `json:"n"`
	Floor uint64 `json:"f,omitempty"`
	Last  uint64 `json:"l,omitempty"`
}

// posOf is where name stands in pos: its own entry, else its parent's
// floor; ok false when neither is there.
func posOf(pos []roomPos, name string) (p roomPos, ok bool) {
	for _, e := range pos {
		if e.Name == name {
			return e, true
		}
	}
	r, err := proto.ParseRoom(name)
	if err != nil || r.Parent().Name() == name {
		return roomPos{}, false
	}
	parent := r.Parent().Name()
	for _, e := range pos {
		if e.Name == parent {
			return roomPos{Name: name, Floor: e.Floor, Last: e.Floor}, true
		}
	}
	return roomPos{}, false
}

// Queued is engineio.Orderer's: m was queued (or refused) in this place.
func (o *order) Queued(m *engineio.Message) {
	if m.Seq == 0 {
		return // a client room's: stored nowhere, never replayed
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case m.Seq > o.max:
		o.max = m.Seq
	case m.Seq < o.max:
		if len(o.inv) == maxInversions {
			o.lost = max(o.lost, o.inv[0].Max)
			o.inv = append(o.inv[:0], o.inv[1:]...)
		}
		o.inv = append(o.inv, inversion{Seq: m.Seq, Max: o.max, Room: m.Room})
	}
	p := o.room(m.Room)
	if p == nil {
		// Its parent's floor, or a room first heard of here (a chat its
		// first message made): nothing of it below this broadcast is the
		// socket's.
		e, ok := posOf(o.rooms, m.Room)
		if !ok {
			e = roomPos{Name: m.Room, Floor: m.Seq - 1}
		}
		o.rooms = append(o.rooms, e)
		p = &o.rooms[len(o.rooms)-1]
	}
	p.Last = max(p.Last, m.Seq)
}

// resumeAt starts the order of a recovered session: where its client
// stood (m), each room at the first broadcast its replay sends (from).
func (o *order) resumeAt(m uint64, from map[string]uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.start, o.max, o.inv, o.lost = m, m, nil, 0
	o.rooms = o.rooms[:0]
	for name, f := range from {
		o.rooms = append(o.rooms, roomPos{Name: name, Floor: f - 1, Last: f - 1})
	}
}

// room is name's position, nil if none. Called with mu held.
func (o *order) room(name string) *roomPos {
	for i := range o.rooms {
		if o.rooms[i].Name == name {
			return &o.rooms[i]
		}
	}
	return nil
}

// joined records that the socket joined the rooms names when they held
// up to floor: nothing at or below it is ever replayed to it. A name whose
// parent's floor says as much gets no entry of its own.
func (o *order) joined(floor uint64, names ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, n := range names {
		if p := o.room(n); p != nil {
			p.Floor = max(p.Floor, floor)
			p.Last = max(p.Last, floor)
			continue
		}
		if e, ok := posOf(o.rooms, n); ok && e.Floor >= floor {
			continue
		}
		o.rooms = append(o.rooms, roomPos{Name: n, Floor: floor, Last: floor})
	}
}

// left forgets the rooms names.
func (o *order) left(names ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, n := range names {
		for i := range o.rooms {
			if o.rooms[i].Name == n {
				o.rooms = append(o.rooms[:i], o.rooms[i+1:]...)
				break
			}
		}
	}
}

// sessionRecord is a cut session, as SESSIONS keeps it under its pid.
type sessionRecord struct {
	User string `json:"user"`
	SID  string `json:"sid"`
	// Rooms are the socket's rooms (their keys) beyond its user and client
	// rooms, which every session has.
	Rooms []string    `json:"rooms,omitempty"`
	Start uint64      `json:"start"`
	Max   uint64      `json:"max"`
	Inv   []inversion `json:"inv,omitempty"`
	Lost  uint64      `json:"lost,omitempty"`
	Pos   []roomPos   `json:"pos,omitempty"`
}

// Why a session was not recovered (the result label of
// roomcast_gateway_recoveries_total; "recovered" when it was).
const (
	recovered         = "recovered"
	recoverUnknown    = "unknown"     // no record: never cut here, expired, or already recovered
	recoverOtherUser  = "other_user"  // the pid is another user's session
	recoverBadOffset  = "bad_offset"  // the offset places nothing: not a sequence, or forgotten
	recoverHistoryCut = "history_cut" // the stream no longer holds what was missed
	recoverForbidden  = "forbidden"   // a room of the session is now forbidden
	recoverTooMuch    = "too_much"    // more was missed than a replay may send
	recoverFailed     = "failed"      // NATS did not answer (the client resyncs)
)

var errNoPlace = errors.New("the offset places nothing")

// resume says where the client whose last offset is offset ("" if it got
// none) stands: every broadcast queued in order at or below m, and those
// queued below their time's highest before its offset, it got; missed are
// the inversions queued after its offset.
func (r *sessionRecord) resume(offset string) (m uint64, missed []inversion, err error) {
	if offset == "" {
		// It got none of this session's broadcasts.
		if r.Lost != 0 {
			return 0, nil, errNoPlace
		}
		return r.Start, r.Inv, nil
	}
	x, err := strconv.ParseUint(offset, 10, 64)
	if err != nil || x == 0 {
		return 0, nil, errNoPlace
	}
	for i, v := range r.Inv {
		if v.Seq == x {
			// An inversion: what was queued in order before it is at or
			// below its Max; the inversions after it in the list came
			// after it.
			return v.Max, r.Inv[i+1:], nil
		}
	}
	if x <= r.Start || x > r.Max {
		// Not of this session (every broadcast it queued in order is
		// above its start, none above its max): the client's last event
		// came before it, on a session that was not recovered (the stock
		// client keeps its last offset then), and it got none of this
		// one's.
		if r.Lost != 0 {
			return 0, nil, errNoPlace
		}
		return r.Start, r.Inv, nil
	}
	if r.Lost >= x {
		return 0, nil, errNoPlace // a forgotten inversion came after it, or it was one
	}
	// Queued in order: everything queued before it is below it, and the
	// inversions queued after it were queued when the highest was x or
	// more.
	for _, v := range r.Inv {
		if v.Max >= x {
			missed = append(missed, v)
		}
	}
	return x, missed, nil
}

// starts is, per room name the session is in, the first sequence to
// replay: the first it missed, and never at or below its floor.
func (r *sessionRecord) starts(m uint64, missed []inversion) map[string]uint64 {
	names := make([]string, 0, len(r.Pos)+2*len(r.Rooms))
	for _, p := range r.Pos {
		names = append(names, p.Name)
	}
	for _, key := range r.Rooms {
		if room, err := proto.ParseRoom(key); err == nil {
			names = append(names, familyNames(room.Parent())...)
		}
	}
	from := make(map[string]uint64, len(names))
	floors := make(map[string]uint64, len(names))
	for _, name := range names {
		p, ok := posOf(r.Pos, name)
		if _, seen := from[name]; seen || !ok {
			continue
		}
		// What was queued in order above m it missed; what came of the
		// room after its last queued it was never sent (late, or dropped
		// by a full fan-out channel).
		from[name] = max(min(m, p.Last)+1, p.Floor+1)
		floors[name] = p.Floor
	}
	for _, v := range missed {
		if f, ok := from[v.Room]; ok && v.Seq < f {
			from[v.Room] = max(v.Seq, floors[v.Room]+1)
		}
	}
	return from
}

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
	g.sessions = &sessions{kv: kv, js: js}
	// Where the stream stands: the floor of what a socket joins before
	// the fan-out delivers anything (after a restart, above all).
	if st, err := js.Stream(bctx, proto.StreamRooms); err == nil {
		g.seenSeq(st.CachedInfo().State.LastSeq)
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
	e, err := g.sessions.kv.Get(ctx, pid)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, recoverUnknown
	}
	if err != nil {
		g.log.Warn().Err(err).Msg("could not read a session record: a new session instead")
		return nil, recoverFailed
	}
	var rec sessionRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.SID == "" {
		return nil, recoverUnknown
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

// kvOperation is the header a KV delete carries.
const kvOperation = "KV-Operation"

// maxReplay bounds the broadcasts one recovery replays: beyond, the client
// reads the rooms again (its library's resync) rather than this many frames.
const maxReplay = 1000

// replayed is one broadcast read again for a recovering socket.
type replayed struct {
	room      string
	seq, prev uint64
	data      []byte
}

// recoveryPlan is a recovery checked before the socket takes the
// session's identity: where its client stood (m), each room's first
// broadcast to replay (from), and the rooms to join again.
type recoveryPlan struct {
	m     uint64
	from  map[string]uint64
	rooms []proto.Room
	// read is what was read of the stream before the socket took the
	// session's id; restoreSession reads what came after.
	read *replayRead
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
// missed, for sendRestored. It returns the result label; on any but
// recovered, s is left in its personal rooms only, as a new session is,
// and the caller releases what it held.
func (g *Gateway) restoreSession(ctx context.Context, s *socket, p *recoveryPlan) (string, []replayed) {
	flush := false
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
	// comes live (held); what it stored since the first read, this one.
	msgs, err := p.read.more(ctx)
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

var errTooMuch = errors.New("more was missed than one replay sends")

// replayRead reads what a recovering socket missed: per room name, the
// broadcasts from its start (from), each with the previous in its room,
// and the user's chats the session did not know of, from after the last
// broadcast the session queued. In two passes: first before the socket
// takes the session's id (too much, or a failure, is then a new session),
// then, once the socket is back in its rooms, what was stored between.
type replayRead struct {
	g     *Gateway
	from  map[string]uint64
	prevs map[string]uint64 // per room, a broadcast known to come just before its start
	// names maps each subject read to its room name; at is the room's last
	// message when it was read (0: none), where the second pass goes on.
	names map[string]string
	at    map[string]uint64
	chats [2]string // the user's chats, in the stream
	after uint64    // the new chats are read from after this
	seen  map[uint64]bool
	out   []replayed
	bytes int
}

func (g *Gateway) newReplayRead(user string, rec *sessionRecord, from map[string]uint64) *replayRead {
	rr := &replayRead{g: g, from: from, prevs: map[string]uint64{}, names: map[string]string{}, at: map[string]uint64{},
		chats: g.subjects.StoredChats(user), after: rec.Max, seen: map[uint64]bool{}}
	for _, pos := range rec.Pos {
		if pos.Last > pos.Floor {
			// The last the socket queued of the room: the replay's first
			// prevSeq when it starts right after.
			rr.prevs[pos.Name] = pos.Last
		}
	}
	for name := range from {
		if r, err := proto.ParseRoom(name); err == nil && r.Kind().Stored() {
			rr.names[g.subjects.Publish(r)] = name
		}
	}
	return rr
}

// first is the first pass.
func (rr *replayRead) first(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, rr.g.cfg.RequestTimeout)
	defer cancel()
	if err := rr.rooms(ctx, func(name string) (uint64, uint64, bool) {
		start := rr.from[name]
		prev, known := rr.prevs[name]
		return start, prev, known && prev+1 == start
	}); err != nil {
		return err
	}
	return rr.newChats(ctx)
}

// more is the second pass: what each room stored after the first read,
// and the chats new since; then the whole replay, in stream order.
func (rr *replayRead) more(ctx context.Context) ([]replayed, error) {
	ctx, cancel := context.WithTimeout(ctx, rr.g.cfg.RequestTimeout)
	defer cancel()
	if err := rr.rooms(ctx, func(name string) (uint64, uint64, bool) {
		at := rr.at[name]
		return at + 1, at, true
	}); err != nil {
		return nil, err
	}
	if err := rr.newChats(ctx); err != nil {
		return nil, err
	}
	sortReplayed(rr.out)
	return rr.out, nil
}

// rooms reads every room of names from where start says (its first
// sequence, and the previous one in the room when known), up to its last
// message now: one batched direct get tells which rooms have anything
// there, and up to where.
func (rr *replayRead) rooms(ctx context.Context, start func(name string) (from, prev uint64, known bool)) error {
	if len(rr.names) == 0 {
		return nil
	}
	subjects := make([]string, 0, len(rr.names))
	for subj := range rr.names {
		subjects = append(subjects, subj)
	}
	last, pending, err := rr.g.directGet(ctx, directget.Request{MultiLast: subjects, Batch: len(subjects)}, len(subjects))
	if err != nil {
		return err
	}
	if pending != 0 {
		return fmt.Errorf("direct get: %d of %d rooms' last messages not sent", pending, len(subjects))
	}
	for _, lm := range last {
		name := rr.names[lm.Subject]
		from, prev, known := start(name)
		rr.at[name] = max(rr.at[name], lm.Seq)
		if lm.Seq < from {
			continue
		}
		if _, err := rr.read(ctx, name, lm.Subject, from, lm.Seq, prev, known); err != nil {
			return err
		}
	}
	return nil
}

// read adds to the replay room name's broadcasts from from up to last
// (what is stored later comes live), the first one's previous being prev
// when known, else asked. It returns the last it added (prev if none).
func (rr *replayRead) read(ctx context.Context, name, subject string, from, last, prev uint64, known bool) (uint64, error) {
	want := last - from + 1 // at most: other rooms' messages are between
	if room := uint64(maxReplay - len(rr.out)); want > room {
		want = room + 1 // enough to know it is too much
	}
	msgs, _, err := rr.g.directGet(ctx, directget.Request{Seq: from, NextBySubject: subject, Batch: int(want)}, int(want))
	if err != nil {
		return 0, err
	}
	for len(msgs) > 0 && msgs[len(msgs)-1].Seq > last {
		msgs = msgs[:len(msgs)-1]
	}
	if !known {
		if prev, err = rr.prevOf(ctx, subject, from); err != nil {
			return 0, err
		}
	}
	for _, m := range msgs {
		if err := rr.add(replayed{room: name, seq: m.Seq, prev: prev, data: m.Data}); err != nil {
			return 0, err
		}
		prev = m.Seq
	}
	return prev, nil
}

// prevOf is the sequence of subject's last message before seq (0: none).
func (rr *replayRead) prevOf(ctx context.Context, subject string, seq uint64) (uint64, error) {
	if seq <= 1 {
		return 0, nil
	}
	before, _, err := rr.g.directGet(ctx, directget.Request{MultiLast: []string{subject}, UpToSeq: seq - 1, Batch: 1}, 1)
	if err != nil || len(before) == 0 {
		return 0, err
	}
	return before[0].Seq, nil
}

// newChats adds the messages of the user's chats the session was not in
// (a chat its first message made while the client was away), stored after
// the last broadcast the session queued; the rooms pass reads them from
// then on, as the others.
func (rr *replayRead) newChats(ctx context.Context) error {
	for _, wild := range rr.chats {
		room := uint64(maxReplay - len(rr.out))
		msgs, pending, err := rr.g.directGet(ctx, directget.Request{Seq: rr.after + 1, NextBySubject: wild, Batch: int(room) + 1}, int(room)+1)
		if err != nil {
			return err
		}
		if pending != 0 {
			return errTooMuch
		}
		if len(msgs) == 0 {
			continue
		}
		upTo := msgs[len(msgs)-1].Seq
		for _, m := range msgs {
			if _, known := rr.names[m.Subject]; known || rr.seen[m.Seq] {
				continue
			}
			r, err := rr.g.subjects.RoomOf(m.Subject)
			if err != nil || r.Kind() != proto.KindChat {
				continue
			}
			// A chat first met here: from now on a room like the others.
			name := r.Name()
			rr.names[m.Subject] = name
			prev, err := rr.prevOf(ctx, m.Subject, m.Seq)
			if err != nil {
				return err
			}
			last, err := rr.read(ctx, name, m.Subject, m.Seq, upTo, prev, true)
			if err != nil {
				return err
			}
			rr.at[name] = last
		}
	}
	return nil
}

// add adds one broadcast to the replay, within its bounds: maxReplay
// broadcasts, and half the socket's send queue (the replay is queued at
// once; more would cut the socket off as slow).
func (rr *replayRead) add(r replayed) error {
	rr.bytes += len(r.data) + len(r.room) + broadcastOverhead
	if len(rr.out) >= maxReplay || rr.bytes > rr.g.cfg.SendQueueBytes/2 {
		return errTooMuch
	}
	rr.seen[r.seq] = true
	rr.out = append(rr.out, r)
	return nil
}

// broadcastOverhead is a broadcast frame's bytes beyond its room name and
// data, at most (appendBroadcastFrame).
const broadcastOverhead = 128

func sortReplayed(out []replayed) {
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].seq < out[j-1].seq; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
}

// directGet sends one batched direct get to stream ROOMS and reads its
// messages (at most size; more is ErrLost) and how many more it matched
// than the batch sent.
func (g *Gateway) directGet(ctx context.Context, req directget.Request, size int) ([]directget.Message, uint64, error) {
	replies, err := directget.Subscribe(g.nc, g.nc.NewInbox(), size+1)
	if err != nil {
		return nil, 0, err
	}
	defer replies.Close()
	if err := g.nc.PublishRequest(proto.DirectGetSubject(proto.StreamRooms), replies.Subject(), req.AppendJSON(nil)); err != nil {
		return nil, 0, err
	}
	var (
		batch directget.Batch
		out   []directget.Message
	)
	for {
		m, err := replies.Next(ctx)
		if err != nil {
			return nil, 0, err
		}
		r, err := batch.Take(m)
		if err != nil {
			return nil, 0, err
		}
		if r.Done {
			return out, r.Pending, nil
		}
		out = append(out, r.Message)
	}
}

// streamFirstSeq is the first sequence stream ROOMS still holds: what is
// below it is gone (max age), and a replay from there is impossible. The
// first sequence only grows, so any read begun at or after since (when
// the caller's recovery began) answers as well as its own: recoveries
// that come together (a storm) share reads instead of one each.
func (g *Gateway) streamFirstSeq(ctx context.Context, since time.Time) (uint64, error) {
	f := &g.sessions.first
	f.mu.Lock()
	r := f.last
	if r == nil || r.began.Before(since) {
		r = &firstSeqRead{began: time.Now(), done: make(chan struct{})}
		f.last = r
		f.mu.Unlock()
		rctx, cancel := context.WithTimeout(context.Background(), g.cfg.RequestTimeout)
		st, err := g.sessions.js.Stream(rctx, proto.StreamRooms)
		cancel()
		if r.err = err; err == nil {
			r.seq = st.CachedInfo().State.FirstSeq
		}
		close(r.done)
	} else {
		f.mu.Unlock()
	}
	select {
	case <-r.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// firstSeqs is the last read of ROOMS's first sequence (streamFirstSeq).
type firstSeqs struct {
	mu   sync.Mutex
	last *firstSeqRead
}

type firstSeqRead struct {
	began time.Time
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
