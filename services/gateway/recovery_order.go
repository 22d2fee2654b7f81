package gateway

import (
	"errors"
	"strconv"
	"sync"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
)

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
	// n counts the stored broadcasts queued; ping is n when the last ping
	// was queued (0: none out). The client's pong says it got everything
	// before the ping: the inversions before the last broadcast it got
	// then can no longer be after its offset, and go (ponged).
	n, ping uint64
}

// inversion is a broadcast queued while a higher sequence had already
// been (Max): only an offset that names it, or one at or below Max,
// places it.
type inversion struct {
	Seq  uint64 `json:"s"`
	Max  uint64 `json:"m"`
	Room string `json:"r"`
	n    uint64 // its place among the broadcasts queued (order.n)
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
	o.n++
	switch {
	case m.Seq > o.max:
		o.max = m.Seq
	case m.Seq < o.max:
		if len(o.inv) == maxInversions {
			o.lost = max(o.lost, o.inv[0].Max)
			o.inv = append(o.inv[:0], o.inv[1:]...)
		}
		o.inv = append(o.inv, inversion{Seq: m.Seq, Max: o.max, Room: m.Room, n: o.n})
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

// pinged marks where a ping is queued (called before it is; with the
// socket's mu held: a leaf under it).
func (o *order) pinged() {
	o.mu.Lock()
	o.ping = o.n
	o.mu.Unlock()
}

// ponged drops the inversions queued before the last broadcast the ping
// followed: the client got that one, so its offset is that one or later,
// and every inversion before it was got too. That one is kept: the offset
// may name it.
func (o *order) ponged() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ping == 0 {
		return
	}
	i := 0
	for i < len(o.inv) && o.inv[i].n < o.ping {
		i++
	}
	o.inv = append(o.inv[:0], o.inv[i:]...)
	o.ping = 0
}

// resumeAt starts the order of a recovered session: where its client
// stood (m), each room at the first broadcast its replay sends (from).
func (o *order) resumeAt(m uint64, from map[string]uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.start, o.max, o.inv, o.lost, o.ping = m, m, nil, 0, 0
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
