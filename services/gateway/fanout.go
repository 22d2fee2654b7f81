package gateway

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
	"github.com/roomcast/roomcast/services/gateway/internal/sio"
)

// fanoutChan is the channel a room's (or a user's chat) subscriptions feed.
// The choice is fixed by name, so one worker sees all of a room's messages,
// in order. nc.ChanSubscribe starts no goroutine per subscription, unlike
// nc.Subscribe with a callback (nats.go runs each callback subscription's
// deliveries on a goroutine of its own, waitForMsgs).
func (g *Gateway) fanoutChan(name string) chan *nats.Msg {
	return g.fanout[shardOf(name)%len(g.fanout)]
}

// The fan-out channels have one backpressure rule: a message that finds its
// channel full is dropped, never waited for (docs/decisions.md,
// Backpressure). nats.go drops it for a channel subscription (a room's, a
// user's chats) and counts it per subscription (Dropped); the shared
// personal wildcards' callback drops it itself. Both are counted in
// roomcast_gateway_fanout_dropped_total.

// unsubscribe ends a room or chat subscription, keeping the count of what
// it dropped (called under the lock of the table that held it, as
// fanoutDropped reads).
func (g *Gateway) unsubscribe(sub *nats.Subscription) {
	if n, err := sub.Dropped(); err == nil && n > 0 {
		g.droppedFull.Add(uint64(n))
	}
	_ = sub.Unsubscribe()
}

// fanoutDropped is how many messages were dropped for a full fan-out
// channel: those of the live room and chat subscriptions, and droppedFull
// (the personal wildcards', and those of subscriptions since ended). A
// scrape reads every subscription under its shard's lock.
func (g *Gateway) fanoutDropped() float64 {
	n := g.droppedFull.Load()
	count := func(subs []*nats.Subscription) {
		for _, sub := range subs {
			if d, err := sub.Dropped(); err == nil {
				n += uint64(d)
			}
		}
	}
	for i := range g.rooms.shards {
		sh := &g.rooms.shards[i]
		sh.mu.Lock()
		for _, rm := range sh.rooms {
			count(rm.subs())
		}
		sh.mu.Unlock()
	}
	for i := range g.users.shards {
		sh := &g.users.shards[i]
		sh.mu.Lock()
		for _, e := range sh.users {
			count(e.chatSubs())
		}
		sh.mu.Unlock()
	}
	return float64(n)
}

// maxBatch bounds how many messages a fan-out worker queues before it
// writes: it bounds the latency the batch adds to its first message.
const maxBatch = 64

// runFanout drains one fan-out channel until done is closed. It takes the
// messages that are waiting (up to maxBatch), queues their frames to every
// member, then writes each socket it has to write once: under load, a socket
// gets several frames in one write (the cost that dominates a delivery);
// when idle, a message is written as soon as it comes. The writes go
// through the worker's Sender: up to 64 sockets' sends in one system call
// where io_uring can be used (docs/decisions.md, "Batched sends").
//
// A panic in one message's delivery is stopped there (see deliver): the
// worker goes on with the next.
func (g *Gateway) runFanout(ch chan *nats.Msg, done <-chan struct{}) {
	var members, writers []*socket
	var ts []engineio.Transport
	snd, err := engineio.NewSender(!g.cfg.WritevOnly)
	defer snd.Close()
	if err != nil {
		g.log.Debug().Err(err).Msg("fan-out writes each socket with its own writev")
	}
	batched := snd.Batched()
	if batched {
		g.m.fanoutBatched.Inc()
	}
	defer func() {
		if batched {
			g.m.fanoutBatched.Dec()
		}
	}()
	deliver := func(m *nats.Msg) {
		defer g.guard.Recover("fanout", nil)
		members = g.deliver(m, members[:0], &writers)
	}
	for {
		select {
		case m := <-ch:
			deliver(m)
		batch:
			for range maxBatch - 1 {
				select {
				case m := <-ch:
					deliver(m)
				default:
					break batch
				}
			}
			for i, s := range writers {
				ts = append(ts, s.transport())
				writers[i] = nil
			}
			writers = writers[:0]
			snd.Write(ts)
			if batched && !snd.Batched() { // its ring broke: writev from now on
				batched = false
				g.m.fanoutBatched.Dec()
			}
			clear(ts)
			ts = ts[:0]
		case <-done:
			return
		}
	}
}

// appendBroadcastFrame encodes one broadcast as a frame (engineio):
//
//	42["broadcast",{"destination":<room>,"data":<envelope>,"seq":N,"prevSeq":M}]
//
// and with offset (recovery on, a stored room's broadcast) its offset, the
// sequence again, as the event's last argument, where socket.io-client
// looks for it:
//
//	42["broadcast",{…},"N"]
//
// data is written as published (the gate made sure it is JSON). The result is
// queued, unchanged, to every member.
func appendBroadcastFrame(room string, data []byte, seq, prev uint64, offset bool) []byte {
	// Build the packet behind room for the largest frame header, then
	// seal the frame in place: one allocation per broadcast.
	b := make([]byte, engineio.MaxHeader, engineio.MaxHeader+len(data)+len(room)+128)
	b = sio.AppendEventPrefix(b, proto.OutgoingEvent)
	b = append(b, `{"destination":`...)
	b = strconv.AppendQuote(b, room)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"prevSeq":`...)
	b = strconv.AppendUint(b, prev, 10)
	b = append(b, '}')
	if offset && seq != 0 {
		b = append(b, `,"`...)
		b = strconv.AppendUint(b, seq, 10)
		b = append(b, '"')
	}
	b = append(b, ']')
	return engineio.Seal(b)
}

// seqHeaders reads the stream sequence and the subject's previous sequence
// that the stream's RePublish put on the message (not a publisher's own
// copies of those headers); client rooms, published straight to their live
// subject, have neither (0, 0).
func seqHeaders(m *nats.Msg) (uint64, uint64) {
	if m.Header == nil {
		return 0, 0
	}
	seq, _ := strconv.ParseUint(proto.StreamHeader(m.Header, jetstream.SequenceHeader), 10, 64)
	prev, _ := strconv.ParseUint(proto.StreamHeader(m.Header, jetstream.LastSequenceHeader), 10, 64)
	return seq, prev
}

// storedAt is when stream ROOMS stored m (the Nats-Time-Stamp its
// RePublish sets, not a copy a publisher stored with its event), the time the gate measures updatedAt against; now for a
// message that has none (a client room's, or a rebroadcast).
func storedAt(m *nats.Msg) time.Time {
	if ts := proto.StreamHeader(m.Header, jetstream.TimeStampHeaer); ts != "" {
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			return t
		}
	}
	return time.Now()
}

// deliver fans one NATS message out to the members of its room: it queues
// the frame to each and appends to *writers the sockets whose writer the
// caller became (it must write them; through a pointer, so that
// those appended before a panic are not lost: their queues would stall).
// members is the worker's scratch slice, returned for reuse.
//
// A panic part-way leaves the broadcast queued to some members only:
// those without it see the gap in the room's seq/prevSeq and resync, as
// after any lost delivery. The room's shard lock is released by a defer
// (membersOf), so a panic cannot leave the room locked.
func (g *Gateway) deliver(m *nats.Msg, members []*socket, writers *[]*socket) []*socket {
	start := time.Now()
	g.m.messagesIn.Inc()
	seq, prev := seqHeaders(m)
	if seq != 0 && g.sessions != nil {
		// Every stored message the gateway sees, for a local room or not:
		// what a socket joining a room now does not get again on recovery.
		g.seenSeq(seq)
	}
	// The gate roomstate and sync apply too: what no client receives live,
	// none reads back in history, and the other way round.
	r, _, err := g.subjects.CheckSubject(m.Subject, m.Data, storedAt(m))
	if err != nil {
		reason := proto.ReasonOf(err)
		g.m.refused.WithLabelValues(string(reason)).Inc()
		g.log.Warn().Err(err).Str("subject", m.Subject).Uint64("seq", seq).Str("reason", string(reason)).Msg("refused a room message")
		return members
	}
	name := r.Parent().Name()
	if r.Kind() == proto.KindChat && seq != 0 && g.sessions != nil {
		for _, u := range r.Members() {
			g.chatsSeen.saw(u, seq)
		}
	}
	members, ok := g.membersOf(r, seq, members)
	if !ok {
		return members
	}

	msg := engineio.Message{
		Frame:     appendBroadcastFrame(r.Name(), m.Data, seq, prev, g.sessions != nil),
		Threshold: g.cfg.DeflateThreshold,
		Seq:       seq,
		Room:      r.Name(),
	}
	sent := 0
	for i, s := range members {
		if ok, start := s.enqueueMessage(&msg); ok {
			sent++
			if start {
				*writers = append(*writers, s)
			}
		} else {
			// Closed or gone from the socket map: drop it from the room.
			g.leaveName(s, name)
		}
		members[i] = nil
		g.hook("fanout")
	}
	g.m.messagesOut.Add(float64(sent))
	if d := msg.Deflated(); d != nil {
		g.m.deflated.Inc()
		g.m.deflatedBytes.WithLabelValues("plain").Add(float64(len(msg.Frame)))
		g.m.deflatedBytes.WithLabelValues("deflated").Add(float64(len(d)))
	}
	g.m.fanoutSeconds.Observe(time.Since(start).Seconds())
	return members
}

// membersOf appends to members the local sockets r's message (stored at
// seq, 0 for a client room) goes to, under r's shard lock, released by a
// defer; ok is false when it goes to none. A chat room is made on its
// first message.
func (g *Gateway) membersOf(r proto.Room, seq uint64, members []*socket) (_ []*socket, ok bool) {
	parent := r.Parent()
	name := parent.Key()
	sh := g.rooms.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	rm := sh.rooms[name]
	if r.Kind() == proto.KindChat {
		if rm == nil {
			rm = g.createChatLocked(sh, r)
		} else {
			g.adoptChatSocketsLocked(rm, r)
		}
	}
	if rm == nil {
		// No local member: a personal room of another gateway's user (shared
		// personal subscriptions), or its last member left while the
		// message was on its way.
		g.m.unrouted.Inc()
		return members, false
	}
	if r.Kind() == proto.KindChat && seq != 0 && g.cfg.PersonalSubscriptions == PersonalPerRoom {
		if rm.own == nil {
			rm.own = &roomOwn{}
		}
		if seq <= rm.own.lastSeq {
			return members, false // the copy from the other member's subscription
		}
		rm.own.lastSeq = seq
	}
	return rm.members.appendTo(members), true
}

// createChatLocked makes chat room r on its first message, with every local
// socket of both members in it. Called with r's shard locked; takes the user
// shards' locks (lock order: locksordering.txt).
func (g *Gateway) createChatLocked(sh *roomShard, r proto.Room) *room {
	rm := &room{}
	g.adoptChatSocketsLocked(rm, r)
	if rm.members.len() == 0 {
		return nil
	}
	sh.rooms[r.Name()] = rm
	g.m.rooms.Inc()
	return rm
}

// adoptChatSocketsLocked puts every local socket of chat r's two members in
// its list, but those that left the chat with removeFromRoom: a tab opened
// after the chat's first message gets the next ones too. Called with r's
// shard locked; takes the user shards' locks.
func (g *Gateway) adoptChatSocketsLocked(rm *room, r proto.Room) {
	for _, u := range r.Members() {
		for _, s := range g.userSockets(u) {
			if rm.members.has(s) || s.leftChat(r.Name()) {
				continue
			}
			if s.addRoom(r.Name()) {
				rm.members.add(s)
			}
		}
	}
}
