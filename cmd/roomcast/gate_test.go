package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway"
	"github.com/roomcast/roomcast/services/roomstate"
	"github.com/roomcast/roomcast/services/sync/backfill"
)

// TestEnvelopeGate: one gate for envelopes (issue 14, item 5). Each bad
// message is published through real NATS into stream ROOMS, then a valid
// one to the same room. The gateway does not deliver the bad one live,
// roomstate does not fold it, sync does not return it, and each counts it
// under its reason; the valid one right after is delivered, folded and
// returned by all three: the same set everywhere.
func TestEnvelopeGate(t *testing.T) {
	const secret = "gate-test-secret"
	_, nc, js := natstest.RunStack(t, proto.StoreConfig{})
	url := nc.ConnectedUrl()
	_, err := nc.Subscribe(proto.SubjectAuthzJoin, func(m *nats.Msg) { _ = m.Respond([]byte(`{"allow":true}`)) })
	require.NoError(t, err)

	regs := map[string]*prometheus.Registry{"gateway": prometheus.NewRegistry(), "roomstate": prometheus.NewRegistry(), "sync": prometheus.NewRegistry()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	run := func(name string, f func(context.Context) error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f(ctx) }()
		t.Cleanup(func() { cancel(); require.NoError(t, <-done, name) })
	}
	run("gateway", func(ctx context.Context) error {
		return gateway.Run(ctx, gateway.Config{Listener: ln, NATSURL: url, JWTSecret: secret, GatewayID: "gw1",
			DrainGrace: 100 * time.Millisecond, Logger: zerolog.Nop(), Registry: regs["gateway"]})
	})
	run("roomstate", func(ctx context.Context) error {
		return roomstate.Run(ctx, roomstate.Config{NATSURL: url, Logger: zerolog.Nop(), Registry: regs["roomstate"]})
	})
	run("sync", func(ctx context.Context) error {
		return backfill.Run(ctx, backfill.Config{NATSURL: url, Logger: zerolog.Nop(), Registry: regs["sync"]})
	})

	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
	require.NoError(t, err)
	var c *sioclient.Conn
	require.Eventually(t, func() bool {
		c, err = sioclient.Dial(context.Background(), sioclient.Options{URL: "ws://" + ln.Addr().String() + "/socket.io/?EIO=4&transport=websocket", Token: tok, Timeout: 3 * time.Second})
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "the gateway is up")
	t.Cleanup(func() { _ = c.Close() })
	var pending [][]byte // broadcasts read while waiting for an ack
	keep := func(m []byte) { pending = append(pending, append([]byte(nil), m...)) }
	// The services are asked over NATS, as the gateway asks them (the
	// socket's endpoints would be the same answers, at 20 calls a second).
	ask := func(subject string, args, out any) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, proto.Request(ctx, nc, subject, args, out), "%s %+v", subject, args)
	}
	nextBroadcast := func() proto.Broadcast {
		t.Helper()
		for {
			var msg []byte
			if len(pending) > 0 {
				msg, pending = pending[0], pending[1:]
			} else {
				require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
				msg, err = c.Next()
				require.NoError(t, err, "waiting for a broadcast")
			}
			if b, ok := decodeBroadcast(msg); ok {
				return b
			}
		}
	}
	require.Eventually(t, func() bool {
		require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		_, err := c.Call(string(proto.EndpointAddToRoom), proto.RoomArgs{RoomName: "board-b1"}, keep)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "roomstate is up: the join reads its state")

	refused := func(service string, reason proto.Reason) float64 {
		t.Helper()
		mfs, err := regs[service].Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() != "roomcast_"+service+"_refused_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "reason" && l.GetValue() == string(reason) {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	ctx := context.Background()
	publish := func(subject string, data []byte) uint64 {
		t.Helper()
		ack, err := js.Publish(ctx, subject, data)
		require.NoError(t, err)
		return ack.Sequence
	}

	tasks, err := proto.BoardTasksRoom("b1")
	require.NoError(t, err)
	base := time.Now().Add(-time.Hour).UnixMilli()
	future := time.Now().Add(100 * 365 * 24 * time.Hour).UnixMilli()
	// Where a bad message has a usable updatedAt, it is above every valid
	// one's, so a fold would show in lastBroadcastTimestamp.
	high := base + 1_000_000
	del := func(id string, at int64) string {
		return fmt.Sprintf(`{"event":"delete-task","id":%q,"updatedAt":%d}`, id, at)
	}
	cases := []struct {
		name string
		room string // the room the valid message after it goes to
		swap bool   // publish the bad one with the room's chat members unsorted
		bad  string
		why  proto.Reason
	}{
		{"no id", "board-b1-tasks", false, fmt.Sprintf(`{"event":"update-task","updatedAt":%d,"diff":{"a":1}}`, high), proto.ReasonID},
		{"updatedAt yesterday", "board-b1-tasks", false, `{"event":"update-task","id":"bad","updatedAt":"yesterday","diff":{"a":1}}`, proto.ReasonUpdatedAt},
		{"update-task to board-B", "board-b1", false, fmt.Sprintf(`{"event":"update-task","id":"bad","updatedAt":%d,"diff":{"a":1}}`, high), proto.ReasonEventRoom},
		{"update-task to a user room", "user-alice", false, fmt.Sprintf(`{"event":"update-task","id":"bad","updatedAt":%d,"diff":{"a":1}}`, high), proto.ReasonEventRoom},
		{"not JSON", "board-b1-tasks", false, `{"event":"delete-task",`, proto.ReasonNotJSON},
		{"not an object", "board-b1-tasks", false, `[1,2]`, proto.ReasonNotObject},
		{"unsorted chat subject", "chat-alice-bob", true, fmt.Sprintf(`{"event":"new-message","id":"bad","updatedAt":%d,"data":{"text":"x"}}`, high), proto.ReasonSubject},
		{"missing event", "board-b1-tasks", false, fmt.Sprintf(`{"id":"bad","updatedAt":%d}`, high), proto.ReasonEvent},
		{"unknown event", "board-b1-tasks", false, fmt.Sprintf(`{"event":"rename-task","id":"bad","updatedAt":%d}`, high), proto.ReasonEvent},
		{"negative updatedAt", "board-b1-tasks", false, del("bad", -5), proto.ReasonUpdatedAt},
		{"fractional updatedAt", "board-b1-tasks", false, `{"event":"delete-task","id":"bad","updatedAt":1.5}`, proto.ReasonUpdatedAt},
		{"updatedAt 100 years ahead", "board-b1-tasks", false, del("bad", future), proto.ReasonFuture},
		{"non-object diff", "board-b1-tasks", false, fmt.Sprintf(`{"event":"update-task","id":"bad","updatedAt":%d,"diff":[1]}`, high), proto.ReasonPayload},
		{"message text not in an object", "chat-alice-bob", false, fmt.Sprintf(`{"event":"new-message","id":"bad","updatedAt":%d,"data":"x"}`, high), proto.ReasonPayload},
		{"id given twice", "board-b1-tasks", false, fmt.Sprintf(`{"event":"delete-task","id":"ok","id":"bad","updatedAt":%d}`, high), proto.ReasonDuplicate},
	}
	for i, tc := range cases {
		room, err := proto.ParseRoom(tc.room)
		require.NoError(t, err)
		subject := proto.Subjects{}.Publish(room)
		if tc.swap {
			subject = strings.Replace(subject, ".alice.bob", ".bob.alice", 1)
		}
		before := map[string]float64{}
		for s := range regs {
			before[s] = refused(s, tc.why)
		}
		badSeq := publish(subject, []byte(tc.bad))

		// The valid message right after, to the same room.
		at := base + int64(i)
		id := fmt.Sprintf("ok%d", i)
		var good string
		switch room.Kind() {
		case proto.KindChat:
			good = fmt.Sprintf(`{"event":"new-message","id":%q,"updatedAt":%d,"data":{"text":"hi"}}`, id, at)
		case proto.KindUser:
			good = fmt.Sprintf(`{"event":"update-user","id":%q,"updatedAt":%d,"diff":{"name":"A"}}`, id, at)
		case proto.KindBoard:
			good = fmt.Sprintf(`{"event":"update-board","id":%q,"updatedAt":%d,"diff":{"name":"B"}}`, id, at)
		default:
			good = fmt.Sprintf(`{"event":"update-task","id":%q,"updatedAt":%d,"diff":{"title":"T"}}`, id, at)
		}
		goodSeq := publish(proto.Subjects{}.Publish(room), []byte(good))

		// Live: the next broadcast is the valid one (a bad one delivered
		// would have come first: the same room's messages stay in order).
		b := nextBroadcast()
		require.Equal(t, goodSeq, b.Seq, "%s: the gateway delivered seq %d (%s), want the valid %d", tc.name, b.Seq, b.Data, goodSeq)
		require.Equal(t, room.Name(), b.Destination, tc.name)
		require.JSONEq(t, good, string(b.Data), tc.name)

		// Folded: the valid one, and not the bad one's updatedAt.
		require.Eventually(t, func() bool {
			var st *proto.RoomState
			ask(proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: room.Name()}, &st)
			return st != nil && st.Seq == goodSeq
		}, 10*time.Second, 20*time.Millisecond, "%s: roomstate folds the valid message", tc.name)
		var st proto.RoomState
		ask(proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: room.Name()}, &st)
		require.Equal(t, at, st.LastBroadcastTimestamp, "%s: roomstate folded the refused message", tc.name)

		// Returned: the valid one only.
		after := badSeq - 1
		cursor := proto.ChangesArgs{RoomName: room.Name(), Cursor: proto.Cursor{AfterSeq: &after}}
		if room.Kind() == proto.KindChat {
			var res proto.ChatResult
			ask(proto.SubjectSyncChat, cursor, &res)
			require.Len(t, res.Messages, 1, "%s: sync returned %s", tc.name, res.Messages)
			require.JSONEq(t, good, string(res.Messages[0]), tc.name)
		} else {
			var res proto.ChangesResult
			ask(proto.SubjectSyncChanges, cursor, &res)
			require.Equal(t, []proto.Change{{ID: id, UpdatedAt: at, Seq: goodSeq}}, res.Changes, tc.name)
		}

		// Counted under its reason by each service that met it. Sync reads
		// a room by its own subject, so a message on a subject that is no
		// room's is never part of an answer, and never met.
		services := []string{"gateway", "roomstate", "sync"}
		if tc.why == proto.ReasonSubject {
			services = services[:2]
		}
		for _, s := range services {
			require.Eventually(t, func() bool { return refused(s, tc.why) > before[s] }, 10*time.Second, 20*time.Millisecond,
				"%s: %s counts roomcast_%s_refused_total{reason=%q}", tc.name, s, s, tc.why)
		}
	}

	// Oversized: stream ROOMS stores nothing larger than the gate takes
	// (MaxMsgSize is MaxEnvelopeSize), so no service ever meets one.
	_, err = js.Publish(ctx, proto.Subjects{}.Publish(tasks), []byte(fmt.Sprintf(`{"event":"update-task","id":"big","updatedAt":%d,"diff":{"pad":%q}}`, base, strings.Repeat("x", proto.MaxEnvelopeSize))))
	require.ErrorContains(t, err, "maximum")

	// Nothing refused arrives late: the next broadcast is a last valid one.
	last := publish(proto.Subjects{}.Publish(tasks), []byte(`{"event":"delete-task","id":"end","updatedAt":1}`))
	require.Equal(t, last, nextBroadcast().Seq)
}
