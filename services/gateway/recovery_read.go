package gateway

import (
	"context"
	"errors"
	"hash/maphash"
	"sync/atomic"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
)

// maxReplay bounds the broadcasts one recovery replays: beyond, the client
// reads the rooms again (its library's resync) rather than this many frames.
const maxReplay = 1000

// replayed is one broadcast read again for a recovering socket.
type replayed struct {
	room      string
	seq, prev uint64
	data      []byte
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
	user  string
	chats [2]string // the user's chats, in the stream
	after uint64    // the new chats are read from after this
	seen  map[uint64]bool
	out   []replayed
	bytes int
}

func (g *Gateway) newReplayRead(user string, rec *sessionRecord, from map[string]uint64) *replayRead {
	rr := &replayRead{g: g, from: from, prevs: map[string]uint64{}, names: map[string]string{}, at: map[string]uint64{},
		user: user, chats: g.subjects.StoredChats(user), after: rec.Max, seen: map[uint64]bool{}}
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

// done is the replay read so far, in stream order, without a second pass.
func (rr *replayRead) done(context.Context) ([]replayed, error) {
	sortReplayed(rr.out)
	return rr.out, nil
}

// rooms reads every room of names from where start says (its first
// sequence, and the previous one in the room when known), up to its last
// message now: one batched direct get (shared with the recoveries that
// ask at the same time, readLast) tells which rooms have anything there,
// and up to where.
func (rr *replayRead) rooms(ctx context.Context, start func(name string) (from, prev uint64, known bool)) error {
	if len(rr.names) == 0 {
		return nil
	}
	subjects := make([]string, 0, len(rr.names))
	for subj := range rr.names {
		subjects = append(subjects, subj)
	}
	last, err := rr.g.readLast(ctx, &rr.g.sessions.rooms, subjects)
	if err != nil {
		return err
	}
	for _, subj := range subjects {
		lm, ok := last[subj]
		if !ok {
			continue // nothing stored in the room
		}
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
	msgs, err := rr.g.readRange(ctx, rangeKey{subject: subject, from: from, last: last, want: int(want)})
	if err != nil {
		return 0, err
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
	before, _, err := rr.g.directGet(ctx, proto.StreamRooms, directget.Request{MultiLast: []string{subject}, UpToSeq: seq - 1, Batch: 1}, 1)
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
	if !rr.g.chatsSeen.since(rr.user, rr.after, rr.g) {
		return nil // none of the user's chats had a message since
	}
	for _, wild := range rr.chats {
		room := uint64(maxReplay - len(rr.out))
		msgs, pending, err := rr.g.directGet(ctx, proto.StreamRooms, directget.Request{Seq: rr.after + 1, NextBySubject: wild, Batch: int(room) + 1}, int(room)+1)
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

// directGet sends one batched direct get to stream (ROOMS, or KV
// SESSIONS's) and reads its messages (at most size; more is ErrLost) and
// how many more it matched than the batch sent.
func (g *Gateway) directGet(ctx context.Context, stream string, req directget.Request, size int) ([]directget.Message, uint64, error) {
	replies, err := directget.Subscribe(g.nc, g.nc.NewInbox(), size+1)
	if err != nil {
		return nil, 0, err
	}
	defer replies.Close()
	if err := g.nc.PublishRequest(proto.DirectGetSubject(stream), replies.Subject(), req.AppendJSON(nil)); err != nil {
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

// chatsSeen keeps, per bucket of users (a hash of the user id), the
// highest sequence of a chat message of one of them that the fan-out saw.
// With the shared personal subscriptions the gateway sees every chat
// message, so a bucket below a sequence says that none of its users' chats
// had a message since: a recovery spares its reads of the user's chats (a
// collision only costs those reads).
type chatsSeen [1 << 12]atomic.Uint64

func (c *chatsSeen) saw(user string, seq uint64) {
	b := &c[maphash.String(shardSeed, user)%uint64(len(c))]
	for {
		cur := b.Load()
		if seq <= cur || b.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// since says whether user's chats may have had a message after seq: yes
// unless this gateway saw every chat message since seq (shared personal
// subscriptions, and running since before it) and none of the user's.
func (c *chatsSeen) since(user string, seq uint64, g *Gateway) bool {
	if g.cfg.PersonalSubscriptions != PersonalShared || seq < g.startSeq {
		return true
	}
	return c[maphash.String(shardSeed, user)%uint64(len(c))].Load() > seq
}
