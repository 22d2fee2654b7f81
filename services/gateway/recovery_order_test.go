package gateway

import (
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
)

// simMsg is one stored broadcast of the simulation.
type simMsg struct {
	seq  uint64
	room string
}

// simQueue queues msgs to an order as fan-out workers would: each room
// belongs to one worker, each worker takes its rooms' messages in stream
// order, and the workers interleave at random; a few messages are dropped
// (a full fan-out channel: into dropped) and never queued. It returns the
// queue order.
func simQueue(rng *rand.Rand, o *order, msgs []simMsg, workerOf map[string]int, workers int, dropOdds float64, dropped map[uint64]bool) []simMsg {
	lanes := make([][]simMsg, workers)
	for _, m := range msgs {
		if rng.Float64() < dropOdds {
			dropped[m.seq] = true
			continue
		}
		w := workerOf[m.room]
		lanes[w] = append(lanes[w], m)
	}
	var queued []simMsg
	for {
		var ready []int
		for w, l := range lanes {
			if len(l) > 0 {
				ready = append(ready, w)
			}
		}
		if len(ready) == 0 {
			return queued
		}
		w := ready[rng.IntN(len(ready))]
		// A worker may run ahead by several messages before another runs.
		for n := 1 + rng.IntN(4); n > 0 && len(lanes[w]) > 0; n-- {
			m := lanes[w][0]
			lanes[w] = lanes[w][1:]
			o.Queued(&engineio.Message{Seq: m.seq, Room: m.room})
			queued = append(queued, m)
		}
	}
}

// snapshot is the record saveSession would write of o.
func snapshot(o *order, rooms []string) *sessionRecord {
	o.mu.Lock()
	defer o.mu.Unlock()
	return &sessionRecord{User: "u1", SID: "s1", Rooms: rooms, Start: o.start, Max: o.max,
		Inv: slices.Clone(o.inv), Lost: o.lost, Pos: slices.Clone(o.rooms)}
}

// TestOrderPlacesTheOffset: whatever order the workers queue a socket's
// broadcasts in, wherever the cut falls, and whatever the socket queued
// after it before the record was taken, the replay a recovery computes
// from the record and the client's last offset is exactly what the client
// did not get: none twice, none lost (but a broadcast dropped before the
// client's last of its room, a gap the client saw live). Then again for
// the recovered session, cut once more. Sizes and interleavings are drawn
// from wide ranges; an offset the record cannot place (inversions
// forgotten) is refused, never guessed.
func TestOrderPlacesTheOffset(t *testing.T) {
	seed := rand.Uint64()
	if v := os.Getenv("ORDER_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	refused := 0
	for round := range 3000 {
		nRooms := 1 + rng.IntN(6)
		workers := 1 + rng.IntN(4)
		// Boards, and the tasks and sprints rooms that share a board's
		// list (and its worker, and its floor until they have their own).
		boards := make([]string, nRooms)
		var rooms []string
		workerOf := map[string]int{}
		for i := range boards {
			boards[i] = "board-b" + strconv.Itoa(i)
			w := rng.IntN(workers)
			for _, name := range []string{boards[i], boards[i] + "-tasks", boards[i] + "-sprints"}[:1+rng.IntN(3)] {
				rooms = append(rooms, name)
				workerOf[name] = w
			}
		}
		// Sizes from a few messages to past maxInversions.
		n := 1 + int(rng.ExpFloat64()*80)
		if rng.IntN(20) == 0 {
			n = 300 + rng.IntN(1500)
		}
		start := uint64(rng.IntN(20))
		var stream []simMsg // every stored message, by seq
		var seq uint64
		add := func(k int) []simMsg {
			var out []simMsg
			for range k {
				seq++
				m := simMsg{seq: seq, room: rooms[rng.IntN(len(rooms))]}
				stream = append(stream, m)
				out = append(out, m)
			}
			return out
		}
		add(int(start)) // before the session: never its own
		dropOdds := []float64{0, 0, 0.02, 0.2}[rng.IntN(4)]

		o := &order{start: start, max: start}
		o.joined(start, boards...)
		dropped := map[uint64]bool{}
		queued := simQueue(rng, o, add(n), workerOf, workers, dropOdds, dropped)
		received := map[uint64]bool{}

		// cut receives the first k of queued, takes the record after c of
		// them (the rest was refused after the close, or still on its
		// way), then more is stored; it returns what the recovery replays
		// and checks it.
		check := func(o *order, queued []simMsg) (replay []simMsg, m uint64, from map[string]uint64, ok bool) {
			k := rng.IntN(len(queued) + 1)
			c := k + rng.IntN(len(queued)-k+1)
			// A ping after the first p the client got, its pong heard
			// after the first q were queued (or none).
			p, q := -1, -1
			if rng.IntN(2) == 0 {
				p = rng.IntN(k + 1)
				q = p + rng.IntN(c-p+1)
			}
			// The record: an order that heard of the first c.
			rec := snapshotAfter(o, queued, c, boards, p, q)
			offset := ""
			for _, m := range queued[:k] {
				received[m.seq] = true
			}
			if k > 0 {
				offset = strconv.FormatUint(queued[k-1].seq, 10)
			}
			add(rng.IntN(5)) // stored after the cut
			m, missed, err := rec.resume(offset)
			if err != nil {
				require.NotZero(t, rec.Lost, "round %d: an offset refused with no inversion forgotten", round)
				return nil, 0, nil, false
			}
			from = rec.starts(m, missed)
			for _, s := range stream {
				f, in := from[s.room]
				replayed := in && s.seq >= f
				switch {
				case received[s.seq]:
					require.False(t, replayed, "round %d: %d (%s) replayed, the client got it (offset %q)", round, s.seq, s.room, offset)
				case s.seq <= start:
				case dropped[s.seq]:
					// Never queued: a gap the client sees, live or in
					// the replay, by seq/prevSeq, and reads again.
				default:
					require.True(t, replayed, "round %d: %d (%s) lost: not received, not replayed (offset %q, from %d)", round, s.seq, s.room, offset, f)
				}
				if replayed {
					replay = append(replay, s)
				}
			}
			return replay, m, from, true
		}
		replay, m, from, ok := check(o, queued)
		if !ok {
			refused++
			continue
		}
		// The recovered session: its order starts as recoverSession
		// starts it, queues the replay, then new broadcasts, and is cut
		// again.
		o2 := &order{}
		o2.resumeAt(m, from)
		var q2 []simMsg
		for _, r := range replay {
			o2.Queued(&engineio.Message{Seq: r.seq, Room: r.room})
			q2 = append(q2, r)
		}
		q2 = append(q2, simQueue(rng, o2, add(int(rng.ExpFloat64()*40)), workerOf, workers, dropOdds, dropped)...)
		if _, _, _, ok := check(o2, q2); !ok {
			refused++
		}
	}
	t.Logf("offsets refused (inversions forgotten): %d of 3000 sessions", refused)
}

// snapshotAfter is the record of an order that heard of the first c of
// queued, a ping queued after the first ping of them and its pong heard
// after the first pong (-1: none): the simulation replays them into a
// fresh order of the same start and rooms.
func snapshotAfter(o *order, queued []simMsg, c int, rooms []string, ping, pong int) *sessionRecord {
	o.mu.Lock()
	fresh := &order{start: o.start, max: o.start}
	for _, p := range o.rooms {
		fresh.rooms = append(fresh.rooms, roomPos{Name: p.Name, Floor: p.Floor, Last: p.Floor})
	}
	o.mu.Unlock()
	for i := 0; i <= c; i++ {
		if i == ping {
			fresh.pinged()
		}
		if i == pong {
			fresh.ponged()
		}
		if i < c {
			fresh.Queued(&engineio.Message{Seq: queued[i].seq, Room: queued[i].room})
		}
	}
	return snapshot(fresh, rooms)
}

// TestResumeOffsetOfAnEarlierSession: the stock client keeps its last
// offset through a session that was not recovered; that offset, below the
// session's start or above anything it queued, means the client got none
// of the session's broadcasts. One the record cannot place is refused.
func TestResumeOffsetOfAnEarlierSession(t *testing.T) {
	rec := &sessionRecord{Start: 100, Max: 120, Inv: []inversion{{Seq: 98, Max: 110, Room: "org-o1"}}}
	for _, offset := range []string{"", "40", "100", "500"} {
		m, missed, err := rec.resume(offset)
		require.NoError(t, err, offset)
		require.Equal(t, uint64(100), m, offset)
		require.Equal(t, rec.Inv, missed, offset)
	}
	m, missed, err := rec.resume("110")
	require.NoError(t, err)
	require.Equal(t, uint64(110), m)
	require.Equal(t, rec.Inv, missed, "queued when the highest was 110: after it")
	m, missed, err = rec.resume("98")
	require.NoError(t, err)
	require.Equal(t, uint64(110), m, "an inversion: placed by its highest")
	require.Empty(t, missed)
	for _, bad := range []string{"x", "0", "-1", "1e3"} {
		_, _, err := rec.resume(bad)
		require.ErrorIs(t, err, errNoPlace, bad)
	}
	rec.Lost = 105
	_, _, err = rec.resume("104")
	require.ErrorIs(t, err, errNoPlace, "a forgotten inversion may have come after it")
	_, _, err = rec.resume("")
	require.ErrorIs(t, err, errNoPlace)
	_, _, err = rec.resume("106")
	require.NoError(t, err)
}
