package gateway

import (
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/roomcast/proto"
)

// shardCount splits the room and user maps so that joins, leaves and
// fan-outs of different rooms rarely share a lock.
const shardCount = 64

var shardSeed = maphash.MakeSeed()

func shardOf(name string) int { return int(maphash.String(shardSeed, name) % shardCount) }

// room is a socket list under a parent room's key (proto.Room.Key: its
// name, and for a client room its user too, so that one user's tab id never
// puts another user's socket in the list) (the seed's ISocketRoom):
// board-B's list also serves board-B-tasks and board-B-sprints
// (includeSocketIdsInRoom). It owns the NATS subscriptions of those rooms,
// which exist exactly while the list is not empty (or, with
// SubscriptionLinger, for that long after). Personal rooms (user, client,
// chat) have none when they are served by the gateway's shared wildcards
// (PersonalShared); chat rooms never have any: their messages come through
// the shared wildcard or their members' chat subscriptions.
type room struct {
	members memberSet
	// own is nil for a room that needs nothing but its members: a personal
	// room served by the shared wildcards, the commonest room there is (two
	// or three per socket), kept at 24 bytes.
	own *roomOwn
}

// roomOwn is what a room holds beyond its members: its subscriptions (board
// and org rooms; per-room user and client rooms) or the last chat sequence.
type roomOwn struct {
	subs []*nats.Subscription
	// lastSeq drops the second copy of a chat message when both members
	// are local and each has its own chat subscriptions (PersonalPerRoom).
	lastSeq uint64
	// emptySince is when the last member left a room whose subscriptions
	// linger (SubscriptionLinger); zero while it has members.
	emptySince time.Time
	// epoch is the gateway's subscription count when these were made
	// (Gateway.subEpoch): a recovery tells by it whether the room was
	// subscribed before its first read of the stream.
	epoch uint64
}

// subs are the room's own subscriptions (none for most rooms).
func (rm *room) subs() []*nats.Subscription {
	if rm.own == nil {
		return nil
	}
	return rm.own.subs
}

// memberSet is a room's sockets. Most rooms have one local member (a
// socket's client room, its user's room, a chat), so a single member is held
// without a map: a map costs about 200 bytes more per room, paid per socket.
type memberSet struct {
	one  *socket              // the only member, while many is nil
	many map[*socket]struct{} // every member, once there were two
}

func (m *memberSet) add(s *socket) {
	switch {
	case m.many != nil:
		m.many[s] = struct{}{}
	case m.one == nil || m.one == s:
		m.one = s
	default:
		m.many = map[*socket]struct{}{m.one: {}, s: {}}
		m.one = nil
	}
}

func (m *memberSet) remove(s *socket) {
	if m.many != nil {
		delete(m.many, s)
	} else if m.one == s {
		m.one = nil
	}
}

func (m *memberSet) has(s *socket) bool {
	if m.many != nil {
		_, in := m.many[s]
		return in
	}
	return m.one != nil && m.one == s
}

func (m *memberSet) len() int {
	if m.many != nil {
		return len(m.many)
	}
	if m.one != nil {
		return 1
	}
	return 0
}

// appendTo appends the members to dst.
func (m *memberSet) appendTo(dst []*socket) []*socket {
	if m.many != nil {
		for s := range m.many {
			dst = append(dst, s)
		}
		return dst
	}
	if m.one != nil {
		dst = append(dst, m.one)
	}
	return dst
}

type roomShard struct {
	mu    sync.Mutex
	rooms map[string]*room
}

// roomTable is the gateway's rooms, keyed by parent room key (Room.Key).
type roomTable struct {
	shards [shardCount]roomShard
}

func (t *roomTable) init() {
	for i := range t.shards {
		t.shards[i].rooms = make(map[string]*room)
	}
}

func (t *roomTable) shard(name string) *roomShard { return &t.shards[shardOf(name)] }

// join puts s in r's socket list (r's parent's), creating the room and its
// subscriptions on the first member. created reports a new subscription, so
// that a caller that must be sure the server has it can flush.
func (g *Gateway) join(s *socket, r proto.Room) (created bool, err error) {
	parent := r.Parent()
	name := parent.Key()
	if ss := s.sess; ss != nil && parent.Kind().Stored() {
		// Before it is a member: a broadcast queued to it from now on
		// finds the room in its order. What the fan-out had seen before
		// is not the socket's to recover (a board's tasks and sprints
		// share the board's floor).
		ss.order.joined(g.highSeq.Load(), parent.Name())
	}
	sh := g.rooms.shard(name)
	sh.mu.Lock()
	rm := sh.rooms[name]
	if rm != nil && rm.members.len() == 0 {
		// Back within SubscriptionLinger: its subscriptions are still there.
		rm.own.emptySince = time.Time{}
		g.m.rooms.Inc()
	}
	if rm == nil {
		rm = &room{}
		if g.ownsSubscriptions(parent) {
			subs, err := g.subscribeRoom(parent)
			if err != nil {
				sh.mu.Unlock()
				return false, err
			}
			rm.own = &roomOwn{subs: subs, epoch: g.subEpoch.Add(1)}
			created = true
		}
		sh.rooms[name] = rm
		g.m.rooms.Inc()
	}
	rm.members.add(s)
	sh.mu.Unlock()
	if !s.addRoom(name) {
		g.leave(s, parent)
		return false, proto.Errorf(proto.CodeUnavailable, "socket is closing")
	}
	return created, nil
}

// subscribedAt is the epoch of parent's own subscriptions (roomOwn.epoch),
// 0 when it has none here (served by the shared personal wildcards, or
// not subscribed).
func (g *Gateway) subscribedAt(parent proto.Room) uint64 {
	sh := g.rooms.shard(parent.Key())
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if rm := sh.rooms[parent.Key()]; rm != nil && rm.own != nil {
		return rm.own.epoch
	}
	return 0
}

// ownsSubscriptions says whether room parent needs subscriptions of its own,
// or is served by the gateway's shared personal wildcards or (chats) its
// members' chat subscriptions.
func (g *Gateway) ownsSubscriptions(parent proto.Room) bool {
	switch parent.Kind() {
	case proto.KindChat:
		return false
	case proto.KindUser, proto.KindClient:
		return g.cfg.PersonalSubscriptions == PersonalPerRoom
	}
	return true
}

// subscribePersonal makes the shared personal subscriptions
// (PersonalShared): the three wildcards of every user, client and chat
// room. A callback routes each message to a fan-out channel picked by its
// subject, so a room's messages stay in order.
func (g *Gateway) subscribePersonal() ([]*nats.Subscription, error) {
	wild := g.subjects.LivePersonal()
	subs, err := g.subscribeAll(wild[:], func(subj string) (*nats.Subscription, error) {
		return g.nc.Subscribe(subj, func(m *nats.Msg) {
			defer g.guard.Recover("personal", nil) // the message is dropped
			g.hook("personal")
			// As nats.go does for the rooms' channel subscriptions: a full
			// fan-out channel drops the message, never blocks (see
			// docs/decisions.md, Backpressure).
			select {
			case g.fanoutChan(m.Subject) <- m:
			default:
				g.droppedFull.Add(1)
			}
		})
	})
	if err != nil {
		return nil, err
	}
	return subs, g.nc.Flush()
}

// subscribeAll subscribes to each subject with subscribe, counting each in
// the subscriptions gauge; on the first failure it drops the ones it made.
func (g *Gateway) subscribeAll(subjects []string, subscribe func(subject string) (*nats.Subscription, error)) ([]*nats.Subscription, error) {
	subs := make([]*nats.Subscription, 0, len(subjects))
	for _, subj := range subjects {
		sub, err := subscribe(subj)
		if err != nil {
			for _, s := range subs {
				g.unsubscribe(s)
			}
			g.m.subscriptions.Sub(float64(len(subs)))
			return nil, fmt.Errorf("subscribe to %s: %w", subj, err)
		}
		g.m.subscriptions.Inc()
		subs = append(subs, sub)
	}
	return subs, nil
}

// subscribeRoom subscribes to the live subjects of parent and its children,
// all into the fan-out channel the parent's name picks, so its messages stay
// in order. Called with the room's shard locked.
func (g *Gateway) subscribeRoom(parent proto.Room) ([]*nats.Subscription, error) {
	ch := g.fanoutChan(parent.Key())
	subjects := []string{g.subjects.Live(parent)}
	for _, c := range parent.Children() {
		subjects = append(subjects, g.subjects.Live(c))
	}
	subs, err := g.subscribeAll(subjects, func(subj string) (*nats.Subscription, error) { return g.nc.ChanSubscribe(subj, ch) })
	if err != nil {
		return nil, proto.Errorf(proto.CodeUnavailable, "room %s: %v", parent.Name(), err)
	}
	return subs, nil
}

// leave takes s out of r's socket list, deleting the room (and dropping its
// subscriptions) with its last member.
func (g *Gateway) leave(s *socket, r proto.Room) {
	parent := r.Parent()
	name := parent.Key()
	s.dropRoom(name)
	g.leaveName(s, name)
	if ss := s.sess; ss != nil && parent.Kind().Stored() {
		ss.order.left(familyNames(parent)...)
	}
}

// familyNames are the names of parent and of the rooms that share its
// socket list.
func familyNames(parent proto.Room) []string {
	names := []string{parent.Name()}
	for _, c := range parent.Children() {
		names = append(names, c.Name())
	}
	return names
}

func (g *Gateway) leaveName(s *socket, name string) {
	sh := g.rooms.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	rm := sh.rooms[name]
	if rm == nil {
		return
	}
	if !rm.members.has(s) {
		return
	}
	rm.members.remove(s)
	if rm.members.len() == 0 {
		g.m.rooms.Dec()
		if g.cfg.SubscriptionLinger > 0 && len(rm.subs()) > 0 {
			// Kept for a socket that comes back soon (a reconnect storm
			// then costs no SUB/UNSUB); sweepLingering drops it later.
			rm.own.emptySince = time.Now()
			return
		}
		g.dropRoomLocked(sh, name, rm)
	}
}

func (g *Gateway) dropRoomLocked(sh *roomShard, name string, rm *room) {
	for _, sub := range rm.subs() {
		g.unsubscribe(sub)
	}
	g.m.subscriptions.Sub(float64(len(rm.subs())))
	delete(sh.rooms, name)
}

// sweepLingering drops the rooms and users whose subscriptions have lingered
// past SubscriptionLinger without a member.
func (g *Gateway) sweepLingering() {
	cutoff := time.Now().Add(-g.cfg.SubscriptionLinger)
	for i := range g.rooms.shards {
		sh := &g.rooms.shards[i]
		sh.mu.Lock()
		for name, rm := range sh.rooms {
			if rm.members.len() == 0 && rm.own != nil && !rm.own.emptySince.IsZero() && rm.own.emptySince.Before(cutoff) {
				g.dropRoomLocked(sh, name, rm)
			}
		}
		sh.mu.Unlock()
	}
	for i := range g.users.shards {
		sh := &g.users.shards[i]
		sh.mu.Lock()
		for u, e := range sh.users {
			if len(e.sockets) == 0 && e.chats != nil && e.chats.emptySince.Before(cutoff) {
				g.dropUserLocked(sh, u, e)
			}
		}
		sh.mu.Unlock()
	}
}

// runSweeper sweeps lingering subscriptions until done is closed.
func (g *Gateway) runSweeper(done <-chan struct{}) {
	if g.cfg.SubscriptionLinger <= 0 {
		return
	}
	t := time.NewTicker(max(g.cfg.SubscriptionLinger/2, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			g.sweepLingering()
		case <-done:
			return
		}
	}
}

// RoomSubscriptions lists the live subjects this gateway is subscribed to
// for rooms (chat subscriptions, per user, are not included), for tests and
// introspection.
func (g *Gateway) RoomSubscriptions() []string {
	var out []string
	for i := range g.rooms.shards {
		sh := &g.rooms.shards[i]
		sh.mu.Lock()
		for _, rm := range sh.rooms {
			for _, sub := range rm.subs() {
				out = append(out, sub.Subject)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// roomMembers counts the local members of r's socket list.
func (g *Gateway) roomMembers(r proto.Room) int {
	name := r.Parent().Key()
	sh := g.rooms.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if rm := sh.rooms[name]; rm != nil {
		return rm.members.len()
	}
	return 0
}

// userEntry is one user's local sockets and, with PersonalPerRoom, chat
// subscriptions (32 bytes without them: one per connected user).
type userEntry struct {
	sockets []*socket
	chats   *userChats
	// The user's budget of endpoint calls over all its sockets here
	// (allowUserCall), under the shard's lock.
	tokens   float64
	tokensAt int64 // when tokens was last topped up (mono)
}

func (g *Gateway) newUserEntry(chats *userChats) *userEntry {
	return &userEntry{chats: chats, tokens: float64(g.cfg.UserRateBurst), tokensAt: mono()}
}

// errTooManySockets: the user has MaxSocketsPerUser sockets here already.
var errTooManySockets = errors.New("too many sockets for this user")

// userChats are a user's own chat subscriptions (PersonalPerRoom).
type userChats struct {
	subs []*nats.Subscription
	// emptySince is when the user's last local socket left, while the chat
	// subscriptions linger (SubscriptionLinger).
	emptySince time.Time
}

// chatSubs are the user's own chat subscriptions (none when shared).
func (e *userEntry) chatSubs() []*nats.Subscription {
	if e.chats == nil {
		return nil
	}
	return e.chats.subs
}

type userShard struct {
	mu    sync.Mutex
	users map[string]*userEntry
	// spent keeps the call budget of a user whose last socket left with
	// part of it spent, until it would have refilled: leaving and coming
	// back (a flood closed, then reconnecting) does not refill it.
	spent map[string]spentBudget
}

// spentBudget is a budget's tokens at a time (mono).
type spentBudget struct {
	tokens float64
	at     int64
}

// maxSpentPerShard bounds spent (memory, under a flood from many accounts):
// past it, the budgets that have refilled are forgotten, then any.
const maxSpentPerShard = 1024

// userTable is the socket map of the seed's ISocketContext, indexed by user:
// revocation, kicks, chats and presence all look sockets up by user.
type userTable struct {
	shards [shardCount]userShard
}

func (t *userTable) init() {
	for i := range t.shards {
		t.shards[i].users = make(map[string]*userEntry)
	}
}

func (t *userTable) shard(u string) *userShard { return &t.shards[shardOf(u)] }

// addUserSocket registers s under its user; with PersonalPerRoom, the
// user's first socket makes the two chat subscriptions. created reports new
// subscriptions.
func (g *Gateway) addUserSocket(s *socket) (created bool, err error) {
	sh := g.users.shard(s.user)
	sh.mu.Lock()
	e := sh.users[s.user]
	if e != nil && len(e.sockets) >= g.cfg.MaxSocketsPerUser {
		sh.mu.Unlock()
		return false, errTooManySockets
	}
	if e == nil && g.cfg.PersonalSubscriptions == PersonalShared {
		e = g.newUserEntry(nil)
		g.takeSpentLocked(sh, s.user, e)
		sh.users[s.user] = e
	}
	if e == nil {
		ch := g.fanoutChan(s.user)
		chats := g.subjects.LiveChats(s.user)
		subs, err := g.subscribeAll(chats[:], func(subj string) (*nats.Subscription, error) { return g.nc.ChanSubscribe(subj, ch) })
		if err != nil {
			sh.mu.Unlock()
			return false, proto.Errorf(proto.CodeUnavailable, "chats: %v", err)
		}
		e = g.newUserEntry(&userChats{subs: subs})
		g.takeSpentLocked(sh, s.user, e)
		sh.users[s.user] = e
		created = true
	}
	if e.chats != nil {
		e.chats.emptySince = time.Time{}
	}
	e.sockets = append(e.sockets, s)
	g.m.sockets.Inc()
	sh.mu.Unlock()
	if s.isClosing() {
		g.removeUserSocket(s)
	}
	return created, nil
}

// allowUserCall takes one token from the budget of s's user (UserRateLimit
// per second, up to UserRateBurst), shared by all of the user's sockets on
// this gateway; without one it reports false and how long until there is.
// The per-socket budget bounds a socket, this one a user: without it, a
// user's sockets multiply what one user may ask (issue 13.4).
func (g *Gateway) allowUserCall(s *socket) (bool, time.Duration) {
	sh := g.users.shard(s.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.users[s.user]
	if e == nil {
		return true, 0 // s is leaving: its call fails on its own
	}
	now := mono()
	e.tokens = min(e.tokens+time.Duration(now-e.tokensAt).Seconds()*g.cfg.UserRateLimit, float64(g.cfg.UserRateBurst))
	e.tokensAt = now
	if e.tokens < 1 {
		return false, time.Duration((1 - e.tokens) / g.cfg.UserRateLimit * float64(time.Second))
	}
	e.tokens--
	return true, 0
}

// removeUserSocket unregisters s; the user's last socket drops the chat
// subscriptions. It reports whether s was registered.
func (g *Gateway) removeUserSocket(s *socket) bool {
	if s.user == "" {
		return false
	}
	sh := g.users.shard(s.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.users[s.user]
	if e == nil {
		return false
	}
	for i, o := range e.sockets {
		if o == s {
			e.sockets[i] = e.sockets[len(e.sockets)-1]
			e.sockets[len(e.sockets)-1] = nil
			e.sockets = e.sockets[:len(e.sockets)-1]
			g.m.sockets.Dec()
			if len(e.sockets) == 0 {
				if g.cfg.SubscriptionLinger > 0 && len(e.chatSubs()) > 0 {
					e.chats.emptySince = time.Now()
				} else {
					g.dropUserLocked(sh, s.user, e)
				}
			}
			return true
		}
	}
	return false
}

// keepSpentLocked keeps e's budget in sh.spent if part of it is spent.
// Called with sh.mu held.
func (g *Gateway) keepSpentLocked(sh *userShard, u string, e *userEntry) {
	now := mono()
	burst := float64(g.cfg.UserRateBurst)
	full := func(b spentBudget) bool {
		return b.tokens+time.Duration(now-b.at).Seconds()*g.cfg.UserRateLimit >= burst
	}
	b := spentBudget{tokens: e.tokens, at: e.tokensAt}
	if full(b) {
		return
	}
	if sh.spent == nil {
		sh.spent = map[string]spentBudget{}
	}
	if len(sh.spent) >= maxSpentPerShard {
		for k, old := range sh.spent {
			if full(old) {
				delete(sh.spent, k)
			}
		}
		for k := range sh.spent {
			if len(sh.spent) < maxSpentPerShard {
				break
			}
			delete(sh.spent, k)
		}
	}
	sh.spent[u] = b
}

// takeSpentLocked gives e the budget u left with, if it is still kept.
// Called with sh.mu held.
func (g *Gateway) takeSpentLocked(sh *userShard, u string, e *userEntry) {
	if b, ok := sh.spent[u]; ok {
		e.tokens, e.tokensAt = b.tokens, b.at
		delete(sh.spent, u)
	}
}

func (g *Gateway) dropUserLocked(sh *userShard, u string, e *userEntry) {
	g.keepSpentLocked(sh, u, e)
	for _, sub := range e.chatSubs() {
		g.unsubscribe(sub)
	}
	g.m.subscriptions.Sub(float64(len(e.chatSubs())))
	delete(sh.users, u)
}

// userSockets is a copy of u's local sockets.
func (g *Gateway) userSockets(u string) []*socket {
	sh := g.users.shard(u)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.users[u]; e != nil {
		return append([]*socket(nil), e.sockets...)
	}
	return nil
}

// allSockets is a copy of every connected socket.
func (g *Gateway) allSockets() []*socket {
	var out []*socket
	for i := range g.users.shards {
		sh := &g.users.shards[i]
		sh.mu.Lock()
		for _, e := range sh.users {
			out = append(out, e.sockets...)
		}
		sh.mu.Unlock()
	}
	return out
}

// forget removes a closing socket from every room and from the socket map,
// and returns the rooms (their keys) it was in.
// A socket that is not in the map is dropped from any room it is still
// found in at broadcast time, so a race here loses nothing.
func (g *Gateway) forget(s *socket) (rooms []string) {
	s.mu.Lock()
	rooms = s.rooms
	s.rooms = nil
	s.mu.Unlock()
	for _, name := range rooms {
		g.leaveName(s, name)
	}
	if g.removeUserSocket(s) {
		g.presence.markDirty(s.user)
	}
	return rooms
}
