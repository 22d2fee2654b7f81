package natstest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

func TestEnsureIsIdempotentAndUpdates(t *testing.T) {
	_, _, js := natstest.RunStack(t, proto.StoreConfig{})
	ctx := context.Background()
	require.NoError(t, proto.Ensure(ctx, js, proto.StoreConfig{}), "again, unchanged")
	require.NoError(t, proto.Ensure(ctx, js, proto.StoreConfig{MaxAge: time.Hour}), "again, with a new max age")
	s, err := js.Stream(ctx, proto.StreamRooms)
	require.NoError(t, err)
	info := s.CachedInfo()
	require.Equal(t, time.Hour, info.Config.MaxAge)
	require.Equal(t, jetstream.FileStorage, info.Config.Storage)
	require.Equal(t, 2*time.Minute, info.Config.Duplicates)
	require.Equal(t, &jetstream.RePublish{Source: ">", Destination: "live.>"}, info.Config.RePublish)
	for _, b := range []string{proto.BucketRoomState, proto.BucketPresence, proto.BucketRevocations, proto.BucketSessions} {
		_, err := js.KeyValue(ctx, b)
		require.NoError(t, err, b)
	}
	// REVOCATIONS keeps a revoke as long as the longest token may live.
	require.NoError(t, proto.Ensure(ctx, js, proto.StoreConfig{MaxTokenLifetime: 2 * time.Hour}))
	kv, err := js.KeyValue(ctx, proto.BucketRevocations)
	require.NoError(t, err)
	st, err := kv.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, st.TTL())
	at := time.UnixMilli(1733550000123)
	require.NoError(t, proto.RecordRevocation(ctx, kv, "u1", at))
	e, err := kv.Get(ctx, "u1")
	require.NoError(t, err)
	r, ok := proto.ParseRevocation(e.Value())
	require.True(t, ok)
	require.Equal(t, at.UnixMilli(), r.RevokedAt)
	require.Error(t, proto.RecordRevocation(ctx, kv, "u.*", at), "a user id that is not an id is no key")
	for _, bad := range []string{``, `{}`, `{"revokedAt":0}`, `{"revokedAt":"1"}`, `null`} {
		_, ok := proto.ParseRevocation([]byte(bad))
		require.False(t, ok, bad)
	}
}

// A published envelope is stored once however often the publish is retried,
// and reaches live.<subject> with the sequence headers that become a
// broadcast's seq and prevSeq.
func TestPublishStoresAndRepublishes(t *testing.T) {
	_, nc, js := natstest.RunStack(t, proto.StoreConfig{})
	ctx := context.Background()
	room, err := proto.BoardTasksRoom("b1")
	require.NoError(t, err)
	subjects := proto.Subjects{}
	live := make(chan *nats.Msg, 10)
	sub, err := nc.ChanSubscribe(subjects.Live(room), live)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, nc.Flush())

	p := proto.NewPublisher(js, subjects)
	create := proto.Envelope{Event: proto.EventCreateTask, ID: "t1", UpdatedAt: 1000, Data: json.RawMessage(`{"title":"a"}`)}
	update := proto.Envelope{Event: proto.EventUpdateTask, ID: "t1", UpdatedAt: 1000, Diff: json.RawMessage(`{"title":"b"}`)}
	a1, err := p.Publish(ctx, room, create)
	require.NoError(t, err)
	a2, err := p.Publish(ctx, room, update)
	require.NoError(t, err)
	require.False(t, a2.Duplicate, "a different change at the same millisecond is kept")
	again, err := p.Publish(ctx, room, update)
	require.NoError(t, err)
	require.True(t, again.Duplicate, "a retry is stored once")
	require.Equal(t, a2.Sequence, again.Sequence)

	for i, want := range []struct {
		seq, prev uint64
		env       proto.Envelope
	}{{a1.Sequence, 0, create}, {a2.Sequence, a1.Sequence, update}} {
		select {
		case m := <-live:
			require.Equal(t, strconv.FormatUint(want.seq, 10), m.Header.Get("Nats-Sequence"), "message %d", i)
			require.Equal(t, strconv.FormatUint(want.prev, 10), m.Header.Get("Nats-Last-Sequence"), "message %d", i)
			got, err := proto.ParseEnvelope(m.Data)
			require.NoError(t, err)
			require.Equal(t, want.env.Event, got.Event)
			require.JSONEq(t, string(want.env.Diff)+string(want.env.Data), string(got.Diff)+string(got.Data))
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d not re-published", i)
		}
	}
	select {
	case m := <-live:
		t.Fatalf("duplicate re-published: %s", m.Data)
	default:
	}
}

func TestPublishRefuses(t *testing.T) {
	_, _, js := natstest.RunStack(t, proto.StoreConfig{})
	p := proto.NewPublisher(js, proto.Subjects{})
	ctx := context.Background()
	tasks, _ := proto.BoardTasksRoom("b1")
	client, _ := proto.ClientRoom("u1", "c1")
	board, _ := proto.BoardRoom("b1")
	del := proto.Envelope{Event: proto.EventDeleteTask, ID: "t1", UpdatedAt: 1}
	_, err := p.Publish(ctx, board, del)
	require.ErrorContains(t, err, "delete-task events go to")
	_, err = p.Publish(ctx, client, del)
	require.ErrorContains(t, err, "client rooms are not stored")
	_, err = p.Publish(ctx, proto.Room{}, del)
	require.ErrorContains(t, err, "no room")
	_, err = p.Publish(ctx, tasks, proto.Envelope{Event: proto.EventDeleteTask, ID: "t1"})
	require.ErrorContains(t, err, "updatedAt")
	// The gate's refusals: what every service would ignore is not stored.
	future := proto.Envelope{Event: proto.EventDeleteTask, ID: "t1", UpdatedAt: time.Now().Add(proto.MaxFutureSkew + time.Minute).UnixMilli()}
	_, err = p.Publish(ctx, tasks, future)
	require.Equal(t, proto.ReasonFuture, proto.ReasonOf(err), "%v", err)
	_, err = p.Publish(ctx, tasks, proto.Envelope{Event: proto.EventCreateTask, ID: "t1", UpdatedAt: 1, Data: json.RawMessage(`"x"`)})
	require.ErrorContains(t, err, "JSON object")
	s, err := js.Stream(ctx, proto.StreamRooms)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "refused publishes store nothing")
}

func TestRequest(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()

	var st proto.RoomState
	err := proto.Request(ctx, nc, proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: "board-b1"}, &st)
	require.Equal(t, proto.CodeUnavailable, proto.CodeOf(err), "no responders: %v", err)

	_, err = nc.Subscribe(proto.SubjectRoomStateGet, func(m *nats.Msg) {
		var args proto.RoomArgs
		_ = json.Unmarshal(m.Data, &args)
		if args.RoomName == "bad" {
			r := nats.NewMsg(m.Reply)
			r.Header.Set(proto.HeaderErrorCode, string(proto.CodeInvalidArgument))
			r.Header.Set(proto.HeaderError, "room name is bad")
			_ = m.RespondMsg(r)
			return
		}
		_ = m.Respond([]byte(`{"lastBroadcastTimestamp":5,"seq":9}`))
	})
	require.NoError(t, err)
	require.NoError(t, proto.Request(ctx, nc, proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: "board-b1"}, &st))
	require.Equal(t, proto.RoomState{LastBroadcastTimestamp: 5, Seq: 9}, st)
	err = proto.Request(ctx, nc, proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: "bad"}, &st)
	require.Equal(t, &proto.Error{Code: proto.CodeInvalidArgument, Message: "room name is bad"}, err)

	// Respond writes what Request reads, from any goroutine.
	_, err = nc.Subscribe("answering.service", func(m *nats.Msg) {
		go func() {
			if string(m.Data) == `"fail"` {
				_ = proto.Respond(nc, m.Reply, nil, proto.Errorf(proto.CodeNotFound, "no such room"))
				return
			}
			if string(m.Data) == `"busy"` {
				_ = proto.Respond(nc, m.Reply, nil, proto.RateLimited(1500*time.Microsecond, "too many reads"))
				return
			}
			_ = proto.Respond(nc, m.Reply, proto.RoomState{LastBroadcastTimestamp: 1, Seq: 2}, nil)
		}()
	})
	require.NoError(t, err)
	require.NoError(t, proto.Request(ctx, nc, "answering.service", "ok", &st))
	require.Equal(t, proto.RoomState{LastBroadcastTimestamp: 1, Seq: 2}, st)
	err = proto.Request(ctx, nc, "answering.service", "fail", &st)
	require.Equal(t, &proto.Error{Code: proto.CodeNotFound, Message: "no such room"}, err)
	// A retry hint crosses with its error, rounded up to a millisecond.
	err = proto.Request(ctx, nc, "answering.service", "busy", &st)
	require.Equal(t, &proto.Error{Code: proto.CodeRateLimited, Message: "too many reads", RetryAfterMs: 2}, err)
	b, _ := proto.Fail(err).AppendJSON(nil)
	require.JSONEq(t, `{"ok":false,"error":{"code":"rate_limited","message":"too many reads","retryAfterMs":2}}`, string(b))

	// A reply kept as raw JSON is handed back as it came, if it is JSON.
	_, err = nc.Subscribe("raw.service", func(m *nats.Msg) {
		var reply string // the request is the reply to send
		_ = json.Unmarshal(m.Data, &reply)
		_ = m.Respond([]byte(reply))
	})
	require.NoError(t, err)
	var raw json.RawMessage
	require.NoError(t, proto.Request(ctx, nc, "raw.service", `{"changes": [1, 2]}`, &raw))
	require.Equal(t, `{"changes": [1, 2]}`, string(raw))
	err = proto.Request(ctx, nc, "raw.service", `{"changes": [1,`, &raw)
	require.Equal(t, proto.CodeInternal, proto.CodeOf(err), "a reply that is not JSON: %v", err)

	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, err = nc.Subscribe("slow.service", func(m *nats.Msg) {})
	require.NoError(t, err)
	err = proto.Request(short, nc, "slow.service", nil, nil)
	require.Equal(t, proto.CodeUnavailable, proto.CodeOf(err), "no answer in time: %v", err)
}

// TestAckAppendJSON: an Ack appends what json.Marshal writes, raw JSON data
// (compact) included, which is appended without being scanned again.
func TestAckAppendJSON(t *testing.T) {
	for _, a := range []proto.Ack{
		proto.OK(proto.RoomState{LastBroadcastTimestamp: 5, Seq: 9}),
		proto.OK(nil),
		proto.OK(struct{}{}),
		proto.OK(json.RawMessage(`{"changes":[{"a":1}],"complete":true}`)),
		proto.Fail(proto.Errorf(proto.CodeForbidden, "no")),
		proto.Fail(errors.New("internal detail")),
	} {
		want, err := json.Marshal(a)
		require.NoError(t, err)
		got, err := a.AppendJSON([]byte("x"))
		require.NoError(t, err)
		require.Equal(t, "x"+string(want), string(got))
	}
}

// BenchmarkAckAppendJSON: the ack of a getChangesSince of 100 changes, the
// reply of sync passed on as raw JSON (checked once by Request).
func BenchmarkAckAppendJSON(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"changes":[`)
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"event":"task.updated","roomName":"board-b0-tasks","updatedAt":%d,"data":{"id":"t%d","title":"a task title of some length","status":"open"},"seq":%d}`, 1700000000000+i, i, 1000000+i)
	}
	sb.WriteString(`],"complete":true}`)
	reply := []byte(sb.String())
	b.SetBytes(int64(len(reply)))
	b.ReportAllocs()
	for b.Loop() {
		if !json.Valid(reply) {
			b.Fatal("invalid")
		}
		if _, err := proto.OK(json.RawMessage(reply)).AppendJSON(nil); err != nil {
			b.Fatal(err)
		}
	}
}
