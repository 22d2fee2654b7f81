package gateway

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
)

// connectAnswer is the CONNECT answer's payload.
type connectAnswer struct {
	SID string `json:"sid"`
	PID string `json:"pid"`
}

func parseAnswer(t testing.TB, frame string) connectAnswer {
	t.Helper()
	require.True(t, strings.HasPrefix(frame, "40{"), frame)
	var a connectAnswer
	require.NoError(t, json.Unmarshal([]byte(frame[2:]), &a))
	return a
}

// connectAs connects user u, as socket.io-client does after a cut when
// pid is set: {token, pid, offset} (offset left out when empty).
func connectAs(t testing.TB, tg *testGateway, u, pid, offset string) (*client, connectAnswer) {
	t.Helper()
	auth := map[string]string{"token": token(t, u, time.Hour)}
	if pid != "" {
		auth["pid"] = pid
	}
	if offset != "" {
		auth["offset"] = offset
	}
	b, err := json.Marshal(auth)
	require.NoError(t, err)
	c, answer := connect(t, tg, string(b))
	return c, parseAnswer(t, answer)
}

// cut closes the client's connection under it: to the gateway, a lost
// connection.
func (c *client) cut() {
	_ = c.conn.Close()
	<-c.closed
}

// waitRecord waits for pid's session record to be stored.
func (e *env) waitRecord(pid string) sessionRecord {
	e.t.Helper()
	kv, err := e.js.KeyValue(context.Background(), proto.BucketSessions)
	require.NoError(e.t, err)
	var rec sessionRecord
	require.Eventually(e.t, func() bool {
		en, err := kv.Get(context.Background(), pid)
		return err == nil && json.Unmarshal(en.Value(), &rec) == nil
	}, 5*time.Second, 5*time.Millisecond, "session record of %s", pid)
	return rec
}

// got is a broadcast as a client saw it.
type got struct {
	room      string
	seq, prev uint64
	offset    string
}

func (c *client) broadcasts(n int) []got {
	c.t.Helper()
	out := make([]got, 0, n)
	for range n {
		b, offset := c.broadcastOffset()
		out = append(out, got{room: b.Destination, seq: b.Seq, prev: b.PrevSeq, offset: offset})
	}
	return out
}

// perRoom is the seqs of gs by room, in the order received.
func perRoom(gs []got) map[string][]uint64 {
	out := map[string][]uint64{}
	for _, g := range gs {
		out[g.room] = append(out[g.room], g.seq)
	}
	return out
}

// countRequests counts the requests made to subjects (seen by e's own
// connection) until the test ends.
func (e *env) countRequests(subjects ...string) *atomic.Int64 {
	e.t.Helper()
	n := &atomic.Int64{}
	for _, subject := range subjects {
		sub, err := e.nc.Subscribe(subject, func(*nats.Msg) { n.Add(1) })
		require.NoError(e.t, err)
		e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	require.NoError(e.t, e.nc.Flush())
	return n
}

// recoveryEnv is a gateway whose users may join anything, and a roomstate
// that answers from the stream (answerStreamState).
func recoveryEnv(t *testing.T, mod ...func(*Config)) (*env, *testGateway) {
	e := newEnv(t)
	e.answerAuthz(func(string, string) bool { return true })
	e.answerStreamState()
	return e, e.startGateway(mod...)
}

// answerStreamState answers roomstate's requests as roomstate does once it
// caught up: a room's state is its last message in the stream.
func (e *env) answerStreamState() {
	e.t.Helper()
	stream, err := e.js.Stream(context.Background(), proto.StreamRooms)
	require.NoError(e.t, err)
	e.answerRoomStateFunc(func(name string) *proto.RoomState {
		r, err := proto.ParseRoom(name)
		if err != nil || !r.Kind().Stored() {
			return nil
		}
		m, err := stream.GetLastMsgForSubject(context.Background(), proto.Subjects{}.Publish(r))
		if err != nil {
			return nil
		}
		return &proto.RoomState{Seq: m.Sequence, LastBroadcastTimestamp: m.Time.UnixMilli()}
	})
}

// TestRecoverAfterCut: a socket cut while broadcasts go to its three
// kinds of rooms (a board's tasks, an org, its user room) comes back with
// its pid and last offset: the same sid and pid, in its rooms, every
// broadcast it missed exactly once in each room's order with the stream's
// seq/prevSeq and its offset, then the live ones.
func TestRecoverAfterCut(t *testing.T) {
	e, tg := recoveryEnv(t)
	c, a := connectAs(t, tg, "u1", "", "")
	require.NotEmpty(t, a.PID, "recovery is on by default: the answer has a pid")
	tasks, org, user := mustRoom(t, "board-b1-tasks"), mustRoom(t, "org-o1"), mustRoom(t, "user-u1")
	c.mustOK(proto.EndpointAddToRoom, map[string]any{"roomName": "board-b1-tasks"})
	c.mustOK(proto.EndpointAddToRoom, map[string]any{"roomName": "org-o1"})
	var last string
	had := map[string]uint64{} // the last of each room the client got
	for i, r := range []proto.Room{tasks, org, user} {
		_, seq := e.publish(r, "x", int64(i+1))
		b, offset := c.broadcastOffset()
		require.Equal(t, seq, b.Seq)
		require.Equal(t, strconv.FormatUint(seq, 10), offset, "the offset is the stream sequence")
		last, had[r.Name()] = offset, seq
	}
	// A room it joined and got nothing of: its first replayed prevSeq is
	// read from the stream (a broadcast from before the join).
	sprints := mustRoom(t, "board-b2-sprints")
	_, before := e.publish(sprints, "s", 5)
	c.mustOK(proto.EndpointAddToRoom, map[string]any{"roomName": "board-b2-sprints"})
	had[sprints.Name()] = before
	// A room that shares the list of the one joined (board-b3 with
	// board-b3-tasks), first joined on this gateway: what it held before
	// is not replayed either.
	board3 := mustRoom(t, "board-b3")
	_, before3 := e.publish(board3, "b", 6)
	c.mustOK(proto.EndpointAddToRoom, map[string]any{"roomName": "board-b3-tasks"})
	had[board3.Name()] = before3
	c.cut()
	e.waitRecord(a.PID)

	var missed []uint64
	want := map[string][]uint64{}
	for i := range 15 {
		r := []proto.Room{tasks, org, user, sprints, board3}[i%5]
		_, seq := e.publish(r, "y", int64(10+i))
		missed = append(missed, seq)
		want[r.Name()] = append(want[r.Name()], seq)
	}
	c2, a2 := connectAs(t, tg, "u1", a.PID, last)
	require.Equal(t, a, a2, "recovered: the same sid and pid")
	gs := c2.broadcasts(len(missed))
	require.Equal(t, want, perRoom(gs), "every missed broadcast once, in each room's order")
	for _, g := range gs {
		require.Equal(t, strconv.FormatUint(g.seq, 10), g.offset)
		require.Equal(t, had[g.room], g.prev, "prevSeq chains on from what the client had, %s", g.room)
		had[g.room] = g.seq
	}
	require.Equal(t, float64(1), tg.counter(tg.m.recoveries.WithLabelValues(recovered)))
	require.Equal(t, float64(len(missed)), tg.counter(tg.m.replayed))

	// Live again, after the replay: in its rooms, nothing twice.
	_, seq := e.publish(org, "z", 99)
	b := c2.broadcast()
	require.Equal(t, seq, b.Seq)
	require.Equal(t, want["org-o1"][len(want["org-o1"])-1], b.PrevSeq)
	c2.noBroadcast()
	// The record was taken: the pid is recovered once.
	kv, err := e.js.KeyValue(context.Background(), proto.BucketSessions)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := kv.Get(context.Background(), a.PID)
		return err != nil
	}, 5*time.Second, 5*time.Millisecond)
}

// TestRecoverNothingMissed: back with nothing missed (and with no offset
// at all, having got nothing), the session is recovered and nothing is
// replayed.
func TestRecoverNothingMissed(t *testing.T) {
	e, tg := recoveryEnv(t)
	c, a := connectAs(t, tg, "u1", "", "")
	c.mustOK(proto.EndpointAddToRoom, map[string]any{"roomName": "board-b1"})
	c.cut()
	e.waitRecord(a.PID)
	c2, a2 := connectAs(t, tg, "u1", a.PID, "")
	require.Equal(t, a, a2)
	c2.noBroadcast()
	_, seq := e.publish(mustRoom(t, "board-b1"), "x", 1)
	require.Equal(t, seq, c2.broadcast().Seq, "back in board-b1")
	require.Equal(t, float64(0), tg.counter(tg.m.replayed))
}

// TestRecoverNewSession: each way a recovery is refused gives a normal new
// session (new sid and pid, only the personal rooms, nothing replayed),
// counted by why.
func TestRecoverNewSession(t *testing.T) {
	e := newEnv(t)
	var mu sync.Mutex
	forbid := map[string]bool{}
	e.answerAuthz(func(_, room string) bool {
		mu.Lock()
		defer mu.Unlock()
		return !forbid[room]
	})
	e.answerStreamState()
	tg := e.startGateway(func(c *Config) { c.AuthzCacheTTL = -1 })
	board := mustRoom(t, "board-b1")
	cutSession := func(u string) (connectAnswer, string) { return e.cutBoardSession(tg, u) }
	refused := func(result string, a connectAnswer, u, pid, offset string) {
		t.Helper()
		before := tg.counter(tg.m.recoveries.WithLabelValues(result))
		e.publish(board, "y", 2) // missed, and not replayed
		c, a2 := connectAs(t, tg, u, pid, offset)
		require.NotEqual(t, a.PID, a2.PID, result)
		require.NotEqual(t, a.SID, a2.SID, result)
		require.NotEmpty(t, a2.PID)
		c.noBroadcast()
		e.publish(board, "z", 3)
		c.noBroadcast() // not in board-b1
		require.Equal(t, before+1, tg.counter(tg.m.recoveries.WithLabelValues(result)), result)
	}

	a, offset := cutSession("u1")
	refused(recoverOtherUser, a, "u2", a.PID, offset)
	refused(recoverUnknown, connectAnswer{}, "u1", "no-such-pid", "1")
	refused(recoverBadOffset, a, "u1", a.PID, "not-a-number")

	// The client's own disconnect leaves nothing to recover.
	c, a := connectAs(t, tg, "u1", "", "")
	c.send("41")
	c.waitClosed()
	refused(recoverUnknown, a, "u1", a.PID, "")

	// A room now forbidden.
	a, offset = cutSession("u1")
	mu.Lock()
	forbid["board-b1"] = true
	mu.Unlock()
	refused(recoverForbidden, a, "u1", a.PID, offset)
	mu.Lock()
	forbid["board-b1"] = false
	mu.Unlock()

	// History cut: what it missed is no longer in the stream.
	a, offset = cutSession("u1")
	_, seq := e.publish(board, "w", 4)
	stream, err := e.js.Stream(context.Background(), proto.StreamRooms)
	require.NoError(t, err)
	require.NoError(t, stream.Purge(context.Background(), jetstream.WithPurgeSequence(seq+1)))
	refused(recoverHistoryCut, a, "u1", a.PID, offset)
}

// TestRecoverOnAnotherGateway: a gateway that stops (SIGTERM: its drain)
// writes its sockets' records before it lets NATS go; their clients come
// back on another gateway, recovered, with what was published meanwhile.
func TestRecoverOnAnotherGateway(t *testing.T) {
	e := newEnv(t)
	e.answerAuthz(func(string, string) bool { return true })
	e.answerStreamState()
	g1, g2 := e.startGateway(), e.startGateway()
	org := mustRoom(t, "org-o1")
	c, a := connectAs(t, g1, "u1", "", "")
	c.mustOK(proto.EndpointAddToRoom, map[string]any{"roomName": "org-o1"})
	e.publish(org, "x", 1)
	_, offset := c.broadcastOffset()
	g1.cancel()
	select {
	case err := <-g1.done:
		require.NoError(t, err)
		g1.done <- err // for the cleanup's wait
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not stop")
	}
	<-c.closed
	e.waitRecord(a.PID)
	var want []uint64
	for i := range 3 {
		_, seq := e.publish(org, "y", int64(2+i))
		want = append(want, seq)
	}
	c2, a2 := connectAs(t, g2, "u1", a.PID, offset)
	require.Equal(t, a, a2)
	require.Equal(t, map[string][]uint64{"org-o1": want}, perRoom(c2.broadcasts(len(want))))
}

// TestRecoverWhilePublishing: broadcasts keep coming while the socket
// recovers: the replay, then the live ones held meanwhile, then the next,
// with none lost between replay and live and none twice.
func TestRecoverWhilePublishing(t *testing.T) {
	e, tg := recoveryEnv(t)
	rooms := []proto.Room{mustRoom(t, "board-b1-tasks"), mustRoom(t, "org-o1"), mustRoom(t, "user-u1"), mustRoom(t, "board-b2")}
	c, a := connectAs(t, tg, "u1", "", "")
	for _, r := range []string{"board-b1", "org-o1", "board-b2"} {
		c.mustOK(proto.EndpointAddToRoom, map[string]any{"roomName": r})
	}
	e.publish(rooms[0], "x", 1)
	_, offset := c.broadcastOffset()
	c.cut()
	e.waitRecord(a.PID)

	var mu sync.Mutex
	want := map[string][]uint64{}
	publish := func(i int) {
		r := rooms[i%len(rooms)]
		_, seq := e.publish(r, "y", int64(i))
		mu.Lock()
		want[r.Name()] = append(want[r.Name()], seq)
		mu.Unlock()
	}
	for i := range 40 {
		publish(i)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 40; i < 240; i++ {
			publish(i)
		}
	}()
	c2, a2 := connectAs(t, tg, "u1", a.PID, offset)
	require.Equal(t, a, a2)
	<-done
	got := perRoom(c2.broadcasts(240))
	require.Equal(t, want, got)
	c2.noBroadcast()
}

// TestRecoveryOff: with ROOMCAST_RECOVERY_TTL=0 the answer has no pid, a
// broadcast no offset, and a cut writes nothing.
func TestRecoveryOff(t *testing.T) {
	e, tg := recoveryEnv(t, func(c *Config) { c.RecoveryTTL = -1 })
	c, a := connectAs(t, tg, "u1", "", "")
	require.Empty(t, a.PID)
	e.publish(mustRoom(t, "user-u1"), "x", 1)
	_, offset := c.broadcastOffset()
	require.Empty(t, offset)
	require.Nil(t, tg.sessions)
}

// TestStreamFirstSeqShared: recoveries that come together share reads of
// ROOMS's first sequence (a storm asks a few times, not once per socket),
// though each began at its own time, after the read in flight began; and
// one that began after the last read began asks again: a purge since is
// seen.
func TestStreamFirstSeqShared(t *testing.T) {
	e, tg := recoveryEnv(t)
	var asked sync.WaitGroup
	reads := e.countRequests("$JS.API.STREAM.INFO." + proto.StreamRooms)
	for range 200 {
		asked.Add(1)
		go func() {
			defer asked.Done()
			first, err := tg.streamFirstSeq(t.Context(), time.Now())
			assert.NoError(t, err)
			assert.LessOrEqual(t, first, uint64(1))
		}()
	}
	asked.Wait()
	_, seq := e.publish(mustRoom(t, "org-o1"), "x", 1)
	e.publish(mustRoom(t, "org-o1"), "y", 2)
	stream, err := e.js.Stream(t.Context(), proto.StreamRooms)
	require.NoError(t, err)
	require.NoError(t, stream.Purge(t.Context(), jetstream.WithPurgeSequence(seq+1)))
	first, err := tg.streamFirstSeq(t.Context(), time.Now())
	require.NoError(t, err)
	require.Equal(t, seq+1, first, "a recovery that began after the purge sees it")
	require.Eventually(t, func() bool { return reads.Load() >= 2 }, 5*time.Second, 5*time.Millisecond)
	require.Less(t, reads.Load(), int64(50), "200 recoveries at once shared their reads")
}

// TestRecoverNewChat: a chat whose first message comes while the client is
// away (the session never was in it) comes back with the rest: its
// messages replayed in order, then live ones.
func TestRecoverNewChat(t *testing.T) {
	e, tg := recoveryEnv(t)
	c, a := connectAs(t, tg, "u1", "", "")
	e.publish(mustRoom(t, "user-u1"), "x", 1)
	_, offset := c.broadcastOffset()
	c.cut()
	e.waitRecord(a.PID)
	chat := mustRoom(t, "chat-u1-u2")
	var want []uint64
	for i := range 3 {
		_, seq := e.publish(chat, "m"+strconv.Itoa(i), int64(2+i))
		want = append(want, seq)
	}
	c2, a2 := connectAs(t, tg, "u1", a.PID, offset)
	require.Equal(t, a, a2)
	gs := c2.broadcasts(len(want))
	require.Equal(t, map[string][]uint64{"chat-u1-u2": want}, perRoom(gs))
	require.Zero(t, gs[0].prev, "the chat's first message")
	_, seq := e.publish(chat, "m3", 9)
	b := c2.broadcast()
	require.Equal(t, seq, b.Seq)
	require.Equal(t, want[len(want)-1], b.PrevSeq)
}

// TestRecoverTooMuch: more missed than one replay may send — more
// broadcasts than maxReplay, or more bytes than half the send queue (the
// replay is queued at once) — is a new session, with a new id, and
// nothing replayed.
func TestRecoverTooMuch(t *testing.T) {
	e, tg := recoveryEnv(t, func(c *Config) { c.SendQueueBytes = 64 << 10 })
	org := mustRoom(t, "org-o1")
	for _, tc := range []struct {
		name string
		n    int
		pad  int
	}{{"count", maxReplay + 1, 0}, {"bytes", 20, 3000}} {
		c, a := connectAs(t, tg, "u1", "", "")
		c.mustOK(proto.EndpointAddToRoom, map[string]any{"roomName": "org-o1"})
		e.publish(org, "x", 1)
		_, offset := c.broadcastOffset()
		c.cut()
		e.waitRecord(a.PID)
		for i := range tc.n {
			env := []byte(`{"event":"update-organization","id":"o1","updatedAt":` + strconv.Itoa(10+i) + `,"diff":{"title":"` + strings.Repeat("p", tc.pad) + `"}}`)
			_, err := e.js.Publish(t.Context(), proto.Subjects{}.Publish(org), env)
			require.NoError(t, err)
		}
		before := tg.counter(tg.m.recoveries.WithLabelValues(recoverTooMuch))
		c2, a2 := connectAs(t, tg, "u1", a.PID, offset)
		require.NotEqual(t, a.PID, a2.PID, tc.name)
		require.NotEqual(t, a.SID, a2.SID, tc.name)
		c2.noBroadcast()
		require.Equal(t, before+1, tg.counter(tg.m.recoveries.WithLabelValues(recoverTooMuch)), tc.name)
	}
}

// TestPongForgetsInversions: once the client answers a ping, the
// inversions queued before the last broadcast the ping followed are
// forgotten (its offset can only be that one or later); that one is kept.
func TestPongForgetsInversions(t *testing.T) {
	_, tg := recoveryEnv(t, func(c *Config) { c.PingInterval, c.PingTimeout = 30*time.Millisecond, 5*time.Second })
	connectAs(t, tg, "u1", "", "")
	var s *socket
	require.Eventually(t, func() bool {
		all := tg.allSockets()
		if len(all) == 1 {
			s = all[0]
		}
		return s != nil
	}, 5*time.Second, time.Millisecond)
	o := &s.sess.order
	o.mu.Lock()
	base := o.max
	o.mu.Unlock()
	for _, seq := range []uint64{base + 10, base + 5, base + 6, base + 11, base + 7} {
		o.Queued(&engineio.Message{Seq: seq, Room: "org-o1"})
	}
	// Inversions 5, 6 (before 11) and 7 (the last before the next ping).
	require.Eventually(t, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.inv) == 1 && o.inv[0].Seq == base+7
	}, 5*time.Second, time.Millisecond)
}

// TestRecordReadsBatched: loadSession's reads of records that come
// together share batched direct gets, and each CONNECT gets its own pid's
// record: written, never written, deleted once recovered, asked twice at
// once, other user's. Numbers of CONNECTs from 1 to 600 (over two batches'
// worth).
func TestRecordReadsBatched(t *testing.T) {
	e, tg := recoveryEnv(t)
	kv, err := e.js.KeyValue(t.Context(), proto.BucketSessions)
	require.NoError(t, err)
	direct := proto.DirectGetSubject(proto.KVStream(proto.BucketSessions))
	requests := e.countRequests(direct, direct+".>") // batched, or one key's
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 19))
	for _, n := range []int{1, 2, 7, 255, 256, 257, 600, 1 + rng.IntN(600)} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			type ask struct{ pid, user, want string } // want: the record's sid, or a result
			asks := make([]ask, n)
			for i := range asks {
				pid, user := randomID(20), "u"+strconv.Itoa(rng.IntN(50))
				asks[i] = ask{pid: pid, user: user, want: recoverUnknown}
				switch rng.IntN(5) {
				case 0: // never written
				case 1: // written, then deleted (recovered once)
					put(t, kv, pid, sessionRecord{User: user, SID: randomID(20)})
					require.NoError(t, kv.Delete(t.Context(), pid))
				case 2: // another user's
					put(t, kv, pid, sessionRecord{User: user + "x", SID: randomID(20)})
					asks[i].want = recoverOtherUser
				case 3: // asked twice
					if i > 0 {
						asks[i] = asks[i-1]
						break
					}
					fallthrough
				default:
					sid := randomID(20)
					put(t, kv, pid, sessionRecord{User: user, SID: sid})
					asks[i].want = sid
				}
			}
			before := requests.Load()
			var wg sync.WaitGroup
			for _, a := range asks {
				wg.Go(func() {
					rec, result := tg.loadSession(t.Context(), a.pid, a.user)
					if rec != nil {
						result = rec.SID
					}
					assert.Equal(t, a.want, result, "pid %s", a.pid)
				})
			}
			wg.Wait()
			assert.LessOrEqual(t, requests.Load()-before, int64(n/4+2), "%d reads at once shared requests", n)
		})
	}
}

func put(t *testing.T, kv jetstream.KeyValue, pid string, rec sessionRecord) {
	t.Helper()
	b, err := json.Marshal(rec)
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), pid, b)
	require.NoError(t, err)
}

// TestRecordReadPanics: a batch of record reads that panics is stopped at
// its boundary: its CONNECTs get new sessions, and the next read works.
func TestRecordReadPanics(t *testing.T) {
	e, tg, a := panicEnv(t)
	e.answerStreamState()
	c, first := connectAs(t, tg, "u1", "", "")
	e.waitRecordAfter(c, first.PID)
	a.Arm("sessions", 1)
	_, fresh := connectAs(t, tg, "u1", first.PID, "")
	tg.waitPanics(t, "sessions", 1)
	require.NotEqual(t, first.SID, fresh.SID, "no record read: a new session")
	c2, second := connectAs(t, tg, "u2", "", "")
	e.waitRecordAfter(c2, second.PID)
	_, back := connectAs(t, tg, "u2", second.PID, "")
	require.Equal(t, second.SID, back.SID, "the next read works")
}

// cutBoardSession makes a session of user u in board-b1 that got one
// broadcast, cut, its record stored: its answer and last offset.
func (e *env) cutBoardSession(tg *testGateway, u string) (connectAnswer, string) {
	e.t.Helper()
	c, a := connectAs(e.t, tg, u, "", "")
	c.mustOK(proto.EndpointAddToRoom, map[string]any{"roomName": "board-b1"})
	e.publish(mustRoom(e.t, "board-b1"), "x", 1)
	_, offset := c.broadcastOffset()
	e.waitRecordAfter(c, a.PID)
	return a, offset
}

// waitRecordAfter cuts c and waits for its record (pid).
func (e *env) waitRecordAfter(c *client, pid string) {
	e.t.Helper()
	c.cut()
	e.waitRecord(pid)
}

// TestRecordReadFails: when the records cannot be read (here the bucket's
// stream is gone: its direct gets have no responder), the CONNECT gets a
// new session at once, counted as failed, not unknown.
func TestRecordReadFails(t *testing.T) {
	e, tg := recoveryEnv(t)
	c, a := connectAs(t, tg, "u1", "", "")
	e.waitRecordAfter(c, a.PID)
	require.NoError(t, e.js.DeleteStream(t.Context(), proto.KVStream(proto.BucketSessions)))
	before := tg.counter(tg.m.recoveries.WithLabelValues(recoverFailed))
	_, back := connectAs(t, tg, "u1", a.PID, "")
	require.NotEqual(t, a.SID, back.SID)
	require.NotEqual(t, a.PID, back.PID)
	require.Equal(t, before+1, tg.counter(tg.m.recoveries.WithLabelValues(recoverFailed)))
}

// TestLastReadsBatched: recoveries' reads of their rooms' last messages
// that come together share batched requests, split at maxLastBatch
// subjects (a caller alone may ask for more), and each caller gets the
// last message of exactly its subjects that have one.
func TestLastReadsBatched(t *testing.T) {
	e, tg := recoveryEnv(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 20))
	last := map[string]uint64{} // subject -> its last sequence
	var subjects []string
	for i := range 400 {
		r := mustRoom(t, "org-o"+strconv.Itoa(i))
		subj := proto.Subjects{}.Publish(r)
		subjects = append(subjects, subj)
		if i%4 != 0 { // one in four never had a message
			for k := range 1 + rng.IntN(3) {
				_, last[subj] = e.publish(r, "x", int64(k+1))
			}
		}
	}
	requests := e.countRequests(proto.DirectGetSubject(proto.StreamRooms))
	callers := 50 + rng.IntN(150)
	var wg sync.WaitGroup
	for i := range callers {
		n := 1 + rng.IntN(8)
		if i == 0 {
			n = 300 // more than a batch on its own
		}
		mine := make([]string, n)
		for k := range mine {
			mine[k] = subjects[rng.IntN(len(subjects))]
		}
		wg.Go(func() {
			got, err := tg.readLast(t.Context(), &tg.sessions.rooms, mine)
			if !assert.NoError(t, err) {
				return
			}
			for _, s := range mine {
				m, ok := got[s]
				if assert.Equal(t, last[s] != 0, ok, s) && ok {
					assert.Equal(t, last[s], m.Seq, s)
				}
			}
		})
	}
	wg.Wait()
	assert.LessOrEqual(t, requests.Load(), int64(callers/4+2), "%d callers at once shared requests", callers)
}

// TestRoomReadPanics: a batch of room reads that panics is stopped at its
// boundary: its recoveries get new sessions, and the next one recovers.
func TestRoomReadPanics(t *testing.T) {
	e, tg, a := panicEnv(t)
	e.answerStreamState()
	session := func(u string) (connectAnswer, string) { return e.cutBoardSession(tg, u) }
	first, offset := session("u1")
	a.Arm("replay", 1)
	_, fresh := connectAs(t, tg, "u1", first.PID, offset)
	tg.waitPanics(t, "replay", 1)
	require.NotEqual(t, first.SID, fresh.SID, "no rooms read: a new session")
	second, offset := session("u2")
	_, back := connectAs(t, tg, "u2", second.PID, offset)
	require.Equal(t, second.SID, back.SID, "the next read works")
}

// TestFirstSeqReadPanics: a read of ROOMS's first sequence that panics is
// stopped at its boundary: the recovery waiting for it gets a new session,
// and the next read (and recovery) works.
func TestFirstSeqReadPanics(t *testing.T) {
	e, tg, a := panicEnv(t)
	e.answerStreamState()
	session := func(u string) connectAnswer {
		c, ans := connectAs(t, tg, u, "", "")
		e.waitRecordAfter(c, ans.PID)
		return ans
	}
	first := session("u1")
	a.Arm("firstseq", 1)
	_, fresh := connectAs(t, tg, "u1", first.PID, "")
	tg.waitPanics(t, "firstseq", 1)
	require.NotEqual(t, first.SID, fresh.SID, "no first sequence: a new session")
	second := session("u2")
	_, back := connectAs(t, tg, "u2", second.PID, "")
	require.Equal(t, second.SID, back.SID, "the next read works")
}

// TestRangeReadsShared: recoveries reading the same missed broadcasts of a
// room (same subject, start, last and count) share one request, in flight
// or kept; each gets the room's messages from its start up to the last it
// saw and no further; a panic fails the callers of that read only, and is
// not kept; past the byte limit the oldest reads are let go.
func TestRangeReadsShared(t *testing.T) {
	e, tg, a := panicEnv(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 21))
	r := mustRoom(t, "board-b1-tasks")
	subject := proto.Subjects{}.Publish(r)
	var seqs []uint64
	for n := range 20 + rng.IntN(30) {
		_, seq := e.publish(r, "t", int64(n+1))
		seqs = append(seqs, seq)
		e.publish(mustRoom(t, "org-o1"), "o", int64(n+1)) // another room's, between
	}
	requests := e.countRequests(proto.DirectGetSubject(proto.StreamRooms))
	// asked waits until n requests were seen (they reach this subscription
	// after the gateway's reads return), and that no more come.
	asked := func(n int64, why string) {
		t.Helper()
		require.Eventually(t, func() bool { return requests.Load() >= n }, 5*time.Second, time.Millisecond, why)
		require.NoError(t, tg.nc.Flush())
		require.NoError(t, e.nc.Flush())
		require.Equal(t, n, requests.Load(), why)
	}
	i, j := rng.IntN(5), len(seqs)-1-rng.IntN(5)
	key := func(last int) rangeKey {
		return rangeKey{subject: subject, from: seqs[i], last: seqs[last], want: int(seqs[last] - seqs[i] + 1)}
	}
	check := func(msgs []directget.Message, last int) {
		t.Helper()
		var got []uint64
		for _, m := range msgs {
			got = append(got, m.Seq)
		}
		assert.Equal(t, seqs[i:last+1], got)
	}

	a.Arm("ranges", 1)
	_, err := tg.readRange(t.Context(), key(j))
	require.ErrorContains(t, err, "panicked")
	asked(0, "the read panicked before it asked")
	var wg sync.WaitGroup
	for range 2 + rng.IntN(100) {
		wg.Go(func() {
			msgs, err := tg.readRange(t.Context(), key(j))
			if assert.NoError(t, err) {
				check(msgs, j)
			}
		})
	}
	wg.Wait()
	asked(1, "one request for every caller, the failed read not kept")
	msgs, err := tg.readRange(t.Context(), key(j))
	require.NoError(t, err)
	check(msgs, j)
	asked(1, "kept")

	// Room for eight reads like it: the ninth other one lets it go.
	q := &tg.sessions.ranges
	q.mu.Lock()
	q.limit = 8*q.bytes + 8
	q.mu.Unlock()
	for n := 1; n <= 9; n++ {
		msgs, err := tg.readRange(t.Context(), key(j-n))
		require.NoError(t, err)
		check(msgs, j-n)
	}
	asked(10, "nine other reads")
	_, err = tg.readRange(t.Context(), key(j))
	require.NoError(t, err)
	asked(11, "the oldest read was let go")
}
