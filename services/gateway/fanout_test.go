package gateway

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
)

// bothPersonalModes runs f with the personal rooms served by the shared
// wildcards and by subscriptions of their own.
func bothPersonalModes(t *testing.T, f func(t *testing.T, mode func(*Config))) {
	for _, m := range []string{PersonalShared, PersonalPerRoom} {
		t.Run(m, func(t *testing.T) { f(t, func(c *Config) { c.PersonalSubscriptions = m }) })
	}
}

func TestFanoutWithSeq(t *testing.T) { bothPersonalModes(t, testFanoutWithSeq) }

func testFanoutWithSeq(t *testing.T, mode func(*Config)) {
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	tg := e.startGateway(mode)
	c := connectUser(t, tg, "u1")
	c.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})

	tasks := mustRoom(t, "board-b1-tasks")
	env1, seq1 := e.publish(tasks, "t1", 1)
	b := c.broadcast()
	require.Equal(t, "board-b1-tasks", b.Destination)
	require.Equal(t, string(env1), string(b.Data)) // as published, byte for byte
	require.Equal(t, seq1, b.Seq)
	require.Equal(t, uint64(0), b.PrevSeq)
	_, _ = e.publish(mustRoom(t, "board-b2"), "x", 2) // another room, in between
	env2, seq2 := e.publish(tasks, "t2", 3)
	b = c.broadcast()
	require.Equal(t, string(env2), string(b.Data))
	require.Equal(t, seq2, b.Seq)
	require.Equal(t, seq1, b.PrevSeq)

	// The user room, joined at connect.
	_, seq3 := e.publish(mustRoom(t, "user-u1"), "u1", 4)
	b = c.broadcast()
	require.Equal(t, "user-u1", b.Destination)
	require.Equal(t, seq3, b.Seq)

	// A client room: published to its live subject directly, no seq.
	sid := c.sid(t, tg)
	require.NoError(t, e.nc.Publish(proto.Subjects{}.Publish(clientRoomOf(t, "u1", sid)), []byte(`{"hello":1}`)))
	b = c.broadcast()
	require.Equal(t, "client-"+sid, b.Destination)
	require.JSONEq(t, `{"hello":1}`, string(b.Data))
	require.Equal(t, uint64(0), b.Seq)

	// Not JSON: refused by the gate and counted, the room goes on.
	require.NoError(t, e.nc.Publish(proto.Subjects{}.Publish(clientRoomOf(t, "u1", sid)), []byte(`{nope`)))
	require.NoError(t, e.nc.Publish(proto.Subjects{}.Publish(clientRoomOf(t, "u1", sid)), []byte(`2`)))
	require.JSONEq(t, `2`, string(c.broadcast().Data))
	require.Equal(t, float64(1), tg.counter(tg.m.refused.WithLabelValues(string(proto.ReasonNotJSON))))

	// After leaving, nothing more arrives and the subscriptions are gone.
	c.mustOK("removeFromRoom", proto.RoomArgs{RoomName: "board-b1"})
	e.publish(tasks, "t3", 5)
	c.noBroadcast()
}

func TestChatRoomCreatedByFirstMessage(t *testing.T) {
	bothPersonalModes(t, testChatRoomCreatedByFirstMessage)
}

func testChatRoomCreatedByFirstMessage(t *testing.T, mode func(*Config)) {
	e := newEnv(t)
	tg := e.startGateway(mode)
	a1 := connectUser(t, tg, "a")
	a2 := connectUser(t, tg, "a")
	b := connectUser(t, tg, "b")
	other := connectUser(t, tg, "c")
	chat := mustRoom(t, "chat-b-a")
	for i := 1; i <= 3; i++ {
		_, seq := e.publish(chat, fmt.Sprint("m", i), int64(i))
		for _, c := range []*client{a1, a2, b} {
			got := c.broadcast()
			require.Equal(t, "chat-a-b", got.Destination)
			require.Equal(t, seq, got.Seq) // once each, though (per room) both members' subscriptions match
		}
	}
	other.noBroadcast()
	for _, c := range []*client{a1, a2, b} {
		c.noBroadcast()
	}
	require.Equal(t, 3, tg.roomMembers(chat))

	// A tab opened after the chat exists gets its next messages too; a
	// socket that left the chat stays out.
	a3 := connectUser(t, tg, "a")
	a1.mustOK("removeFromRoom", proto.RoomArgs{RoomName: "chat-a-b"})
	_, seq := e.publish(chat, "m4", 4)
	for _, c := range []*client{a2, a3, b} {
		require.Equal(t, seq, c.broadcast().Seq)
	}
	a1.noBroadcast()
	require.Equal(t, 3, tg.roomMembers(chat))
}

func TestTwoGatewaysOneNATS(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	g1, g2, g3 := e.startGateway(), e.startGateway(), e.startGateway()
	c1, c2 := connectUser(t, g1, "u1"), connectUser(t, g2, "u2")
	connectUser(t, g3, "u3") // in no board
	c1.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	c2.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	require.Contains(t, g1.RoomSubscriptions(), "live.rooms.board.b1")
	require.Contains(t, g2.RoomSubscriptions(), "live.rooms.board.b1")
	require.Empty(t, g3.RoomSubscriptions())                     // its user, client and chats come through
	require.Equal(t, float64(3), g3.counter(g3.m.subscriptions)) // the three shared personal wildcards

	const n = 50
	var seqs []uint64
	for i := 0; i < n; i++ {
		_, seq := e.publish(mustRoom(t, "board-b1-sprints"), fmt.Sprint("s", i), int64(i+1))
		seqs = append(seqs, seq)
	}
	for _, c := range []*client{c1, c2} {
		prev := uint64(0)
		for i := 0; i < n; i++ {
			b := c.broadcast()
			require.Equal(t, seqs[i], b.Seq)
			require.Equal(t, prev, b.PrevSeq)
			prev = b.Seq
		}
		c.noBroadcast()
	}
	require.Equal(t, float64(0), g3.counter(g3.m.messagesIn))
	c2.mustOK("removeFromRoom", proto.RoomArgs{RoomName: "board-b1"})
	require.NotContains(t, g2.RoomSubscriptions(), "live.rooms.board.b1")
}

// TestSlowSocketIsCutOffOthersGetEverything, with the fan-out's sends
// batched (io_uring, where this kernel allows it: 101 members are two
// submissions) and with a writev each.
func TestSlowSocketIsCutOffOthersGetEverything(t *testing.T) {
	for name, writevOnly := range map[string]bool{"batched": false, "writev": true} {
		t.Run(name, func(t *testing.T) { testSlowSocketIsCutOff(t, writevOnly) })
	}
}

func testSlowSocketIsCutOff(t *testing.T, writevOnly bool) {
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	tg := e.startGateway(func(c *Config) {
		c.SendQueueBytes = 256 << 10
		c.TCPSendBuffer = 4096
		c.WritevOnly = writevOnly
	})
	const others, msgs = 100, 100
	clients := make([]*client, others)
	for i := range clients {
		clients[i] = connectUser(t, tg, fmt.Sprint("u", i))
		clients[i].mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	}
	slow, err := dialWith(t, tg, "", nil, smallReceiveBuffer, withoutReading)
	require.NoError(t, err)
	slow.send(`40{"token":"` + token(t, "slow", time.Hour) + `"}`)
	slow.send(`420["endpoint",{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}]`)
	require.Eventually(t, func() bool { return tg.roomMembers(mustRoom(t, "board-b1")) == others+1 }, 5*time.Second, 10*time.Millisecond)

	pad := make([]byte, 6000)
	for i := range pad {
		pad[i] = 'x'
	}
	// Published in batches, each read by the 100 before the next: they
	// are never far behind, while the slow one falls further behind with
	// every batch until its queue overflows.
	const batch = 10
	for first := 0; first < msgs; first += batch {
		seqs := make([]uint64, batch)
		for i := range seqs {
			b := []byte(fmt.Sprintf(`{"event":"update-task","id":"t","updatedAt":%d,"diff":{"pad":%q}}`, first+i+1, pad))
			ack, err := e.js.Publish(context.Background(), proto.Subjects{}.Publish(mustRoom(t, "board-b1-tasks")), b)
			require.NoError(t, err)
			seqs[i] = ack.Sequence
		}
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Add(1)
			go func(c *client) {
				defer wg.Done()
				for i := range seqs {
					select {
					case e := <-c.events:
						// The seq is near the end; decoding the padded
						// envelope 10,000 times would only slow the test.
						tail := e[strings.LastIndex(e, `,"seq":`):]
						if want := fmt.Sprintf(`,"seq":%d,`, seqs[i]); !strings.HasPrefix(tail, want) {
							t.Errorf("message %d: %s, want %s", first+i, tail, want)
						}
					case <-time.After(10 * time.Second):
						t.Errorf("message %d missing (slow disconnects %v)", first+i, tg.counter(tg.m.slowDisconnects))
						return
					}
				}
			}(c)
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	require.Eventually(t, func() bool { return tg.counter(tg.m.slowDisconnects) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, others, tg.roomMembers(mustRoom(t, "board-b1")))
}

func TestAppendBroadcastFrame(t *testing.T) {
	for _, n := range []int{10, 200, 70000} {
		data := []byte(`"` + string(make([]byte, 0)) + fmt.Sprintf("%0*d", n, 0) + `"`)
		f := appendBroadcastFrame("board-b1", data, 5, 4, false)
		h, err := ws.ReadHeader(bytesReader(f))
		require.NoError(t, err)
		payload := f[len(f)-int(h.Length):]
		require.True(t, h.Fin)
		require.Equal(t, ws.OpText, h.OpCode)
		require.Equal(t, `42["broadcast",{"destination":"board-b1","data":`+string(data)+`,"seq":5,"prevSeq":4}]`, string(payload))
	}
}

// TestSharedPersonalSubscriptions: with the shared personal wildcards, two
// gateways each hold three subscriptions however many sockets connect; a
// user's, a client's and a chat's messages reach exactly the local sockets
// they name, across gateways, and a gateway with none of them counts the
// message as unrouted, makes no room and delivers nothing.
func TestSharedPersonalSubscriptions(t *testing.T) {
	e := newEnv(t)
	g1, g2 := e.startGateway(), e.startGateway()
	a1, a2 := connectUser(t, g1, "a"), connectUser(t, g1, "a")
	b := connectUser(t, g2, "b")
	for _, g := range []*testGateway{g1, g2} {
		require.Equal(t, float64(3), g.counter(g.m.subscriptions))
		require.Empty(t, g.RoomSubscriptions())
	}

	// user-a: both of a's tabs on g1; g2 has no socket of a.
	_, seq := e.publish(mustRoom(t, "user-a"), "a", 1)
	for _, c := range []*client{a1, a2} {
		got := c.broadcast()
		require.Equal(t, "user-a", got.Destination)
		require.Equal(t, seq, got.Seq)
	}
	b.noBroadcast()
	require.Eventually(t, func() bool { return g2.counter(g2.m.unrouted) == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, g1.counter(g1.m.unrouted))
	require.Equal(t, 0, g2.roomMembers(mustRoom(t, "user-a")))

	// client-<b's sid>: b alone.
	sid := b.sid(t, g2)
	require.NoError(t, e.nc.Publish(proto.Subjects{}.Publish(clientRoomOf(t, "b", sid)), []byte(`{"hi":1}`)))
	require.JSONEq(t, `{"hi":1}`, string(b.broadcast().Data))
	a1.noBroadcast()
	require.Eventually(t, func() bool { return g1.counter(g1.m.unrouted) == 1 }, 5*time.Second, 5*time.Millisecond)

	// A chat across the two gateways: every member's socket once.
	chat := mustRoom(t, "chat-b-a")
	_, seq = e.publish(chat, "m1", 2)
	for _, c := range []*client{a1, a2, b} {
		got := c.broadcast()
		require.Equal(t, "chat-a-b", got.Destination)
		require.Equal(t, seq, got.Seq)
		c.noBroadcast()
	}
	// A chat of two users neither gateway has.
	before := g1.counter(g1.m.messagesOut) + g2.counter(g2.m.messagesOut)
	e.publish(mustRoom(t, "chat-x-y"), "m2", 3)
	require.Eventually(t, func() bool {
		return g1.counter(g1.m.unrouted) == 2 && g2.counter(g2.m.unrouted) == 2
	}, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, before, g1.counter(g1.m.messagesOut)+g2.counter(g2.m.messagesOut))
	require.Equal(t, 0, g1.roomMembers(mustRoom(t, "chat-x-y")))
}

// TestFanoutBatchedWorkers: roomcast_gateway_fanout_batched_workers says how
// many fan-out workers send through io_uring: every one where this machine
// lets a Sender batch (as an operator reads it to know which path runs),
// none with WritevOnly.
func TestFanoutBatchedWorkers(t *testing.T) {
	probe, _ := engineio.NewSender(true)
	here := probe.Batched()
	probe.Close()
	t.Logf("io_uring sends here: %v", here)
	for name, writevOnly := range map[string]bool{"default": false, "writev-only": true} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.answerRoomState(nil)
			e.answerAuthz(func(string, string) bool { return true })
			tg := e.startGateway(func(c *Config) {
				c.WritevOnly = writevOnly
				c.FanoutWorkers = 3
			})
			want := 0.0
			if here && !writevOnly {
				want = 3
			}
			require.Eventually(t, func() bool { return tg.counter(tg.m.fanoutBatched) == want }, 5*time.Second, 10*time.Millisecond,
				"batched workers: want %v, have %v", want, tg.counter(tg.m.fanoutBatched))
			// and it stays so while the workers work
			c := connectUser(t, tg, "u1")
			c.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
			e.publish(mustRoom(t, "board-b1-tasks"), "t1", 1)
			require.Equal(t, "board-b1-tasks", c.broadcast().Destination)
			require.Equal(t, want, tg.counter(tg.m.fanoutBatched))
		})
	}
}
