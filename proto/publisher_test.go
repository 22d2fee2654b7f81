package proto_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/natstest"
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
	for _, b := range []string{proto.BucketRoomState, proto.BucketPresence} {
		_, err := js.KeyValue(ctx, b)
		require.NoError(t, err, b)
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
	client, _ := proto.ClientRoom("c1")
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
			_ = proto.Respond(nc, m.Reply, proto.RoomState{LastBroadcastTimestamp: 1, Seq: 2}, nil)
		}()
	})
	require.NoError(t, err)
	require.NoError(t, proto.Request(ctx, nc, "answering.service", "ok", &st))
	require.Equal(t, proto.RoomState{LastBroadcastTimestamp: 1, Seq: 2}, st)
	err = proto.Request(ctx, nc, "answering.service", "fail", &st)
	require.Equal(t, &proto.Error{Code: proto.CodeNotFound, Message: "no such room"}, err)

	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, err = nc.Subscribe("slow.service", func(m *nats.Msg) {})
	require.NoError(t, err)
	err = proto.Request(short, nc, "slow.service", nil, nil)
	require.Equal(t, proto.CodeUnavailable, proto.CodeOf(err), "no answer in time: %v", err)
}
