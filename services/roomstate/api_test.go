package roomstate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func TestGet(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	r := st.start(t, nil)
	tasks, err := proto.BoardTasksRoom("b1")
	require.NoError(t, err)
	chat, err := proto.ChatRoom("alice", "bob")
	require.NoError(t, err)
	never, err := proto.BoardRoom("b9")
	require.NoError(t, err)
	client, err := proto.ClientRoom("u1", "c1")
	require.NoError(t, err)

	seq := st.publish(t, tasks, "t1", 1234)
	chatSeq := st.publish(t, chat, "m1", 99)
	st.waitStates(t, map[string]proto.RoomState{
		tasks.Name(): {LastBroadcastTimestamp: 1234, Seq: seq},
		chat.Name():  {LastBroadcastTimestamp: 99, Seq: chatSeq},
	})

	got, err := st.get(t, tasks.Name())
	require.NoError(t, err)
	require.Equal(t, &proto.RoomState{LastBroadcastTimestamp: 1234, Seq: seq}, got)

	// Never broadcast to, and client rooms (never stored): null.
	for _, name := range []string{never.Name(), client.Name()} {
		m, err := st.nc.Request(proto.SubjectRoomStateGet, mustJSON(t, proto.RoomArgs{RoomName: name}), 5*time.Second)
		require.NoError(t, err)
		require.Equal(t, "null", string(m.Data), name)
	}

	// Chat members in either order name the same room.
	reversed := strings.Replace(chat.Name(), "alice-bob", "bob-alice", 1)
	got, err = st.get(t, reversed)
	require.NoError(t, err)
	require.Equal(t, &proto.RoomState{LastBroadcastTimestamp: 99, Seq: chatSeq}, got)

	for _, name := range []string{"", "board-*", "board->", "board-b1 x", "board-a.b", "nope-1", "board-" + strings.Repeat("x", 65)} {
		_, err := st.get(t, name)
		require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err), "%q: %v", name, err)
	}
	// Arguments that are not JSON.
	m, err := st.nc.Request(proto.SubjectRoomStateGet, []byte("{"), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, proto.CodeInvalidArgument, proto.ReplyError(m).Code)

	// Every answer is counted by its code (the last one may still be on its
	// way to the counter when the reply arrives).
	require.Eventually(t, func() bool {
		return r.metric(t, "roomcast_roomstate_requests_total", "code", "invalid_argument") == 8
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, float64(4), r.metric(t, "roomcast_roomstate_requests_total", "endpoint", "get", "code", "ok"))
}

func TestGetMany(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	st.start(t, nil)
	a, err := proto.BoardTasksRoom("b1")
	require.NoError(t, err)
	b, err := proto.OrgRoom("o1")
	require.NoError(t, err)
	never, err := proto.UserRoom("u9")
	require.NoError(t, err)
	seqA := st.publish(t, a, "t1", 10)
	seqB := st.publish(t, b, "o1", 20)
	st.waitStates(t, map[string]proto.RoomState{a.Name(): {LastBroadcastTimestamp: 10, Seq: seqA}, b.Name(): {LastBroadcastTimestamp: 20, Seq: seqB}})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var res proto.RoomStatesResult
	require.NoError(t, proto.Request(ctx, st.nc, proto.SubjectRoomStateGetMany, proto.RoomStatesArgs{RoomNames: []string{a.Name(), b.Name(), never.Name()}}, &res))
	require.Equal(t, map[string]*proto.RoomState{
		a.Name():     {LastBroadcastTimestamp: 10, Seq: seqA},
		b.Name():     {LastBroadcastTimestamp: 20, Seq: seqB},
		never.Name(): nil,
	}, res.States)

	// The most rooms allowed; then one too many.
	names := make([]string, proto.MaxBatchRooms)
	for i := range names {
		r, err := proto.BoardRoom(fmt.Sprintf("b%d", i))
		require.NoError(t, err)
		names[i] = r.Name()
	}
	names[0] = a.Name()
	res = proto.RoomStatesResult{}
	require.NoError(t, proto.Request(ctx, st.nc, proto.SubjectRoomStateGetMany, proto.RoomStatesArgs{RoomNames: names}, &res))
	require.Len(t, res.States, proto.MaxBatchRooms)
	require.Equal(t, &proto.RoomState{LastBroadcastTimestamp: 10, Seq: seqA}, res.States[a.Name()])
	err = proto.Request(ctx, st.nc, proto.SubjectRoomStateGetMany, proto.RoomStatesArgs{RoomNames: append(names, never.Name())}, nil)
	require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err), "%v", err)

	// One bad name spoils the request.
	err = proto.Request(ctx, st.nc, proto.SubjectRoomStateGetMany, proto.RoomStatesArgs{RoomNames: []string{a.Name(), "board-*"}}, nil)
	require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err), "%v", err)

	// An empty request is an empty answer.
	res = proto.RoomStatesResult{}
	require.NoError(t, proto.Request(ctx, st.nc, proto.SubjectRoomStateGetMany, proto.RoomStatesArgs{}, &res))
	require.Empty(t, res.States)
}

// The service is discoverable through micro's $SRV subjects.
func TestServiceDiscovery(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	st.start(t, nil)
	subject, err := micro.ControlSubject(micro.InfoVerb, proto.ServiceRoomState, "")
	require.NoError(t, err)
	var info micro.Info
	require.Eventually(t, func() bool {
		m, err := st.nc.Request(subject, nil, time.Second)
		return err == nil && json.Unmarshal(m.Data, &info) == nil
	}, waitFor, 10*time.Millisecond)
	require.Equal(t, proto.ServiceRoomState, info.Name)
	var subjects []string
	for _, e := range info.Endpoints {
		subjects = append(subjects, e.Subject)
	}
	require.ElementsMatch(t, []string{proto.SubjectRoomStateGet, proto.SubjectRoomStateGetMany}, subjects)
}

// State outlives everything but the TTL, which is the stream's max age.
func TestStateExpires(t *testing.T) {
	store := proto.StoreConfig{MaxAge: 2 * time.Second}
	require.Equal(t, store.RoomsStream().MaxAge, store.RoomStateBucket().TTL)
	st := newStack(t, store)
	st.start(t, nil)
	room, err := proto.BoardTasksRoom("b1")
	require.NoError(t, err)
	seq := st.publish(t, room, "t1", 5)
	st.waitStates(t, map[string]proto.RoomState{room.Name(): {LastBroadcastTimestamp: 5, Seq: seq}})
	require.Eventually(t, func() bool {
		got, err := st.get(t, room.Name())
		return err == nil && got == nil
	}, waitFor, 50*time.Millisecond, "state must expire with the bucket TTL")

	// A new broadcast after expiry creates it again (the write is a Create,
	// whatever the writer remembered).
	seq = st.publish(t, room, "t2", 6)
	st.waitStates(t, map[string]proto.RoomState{room.Name(): {LastBroadcastTimestamp: 6, Seq: seq}})
}

func TestHTTP(t *testing.T) {
	st := newStack(t, proto.StoreConfig{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	st.start(t, func(c *Config) { c.HTTPAddr = addr })
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	require.Eventually(t, func() bool { code, _ := get("/readyz"); return code == http.StatusOK }, waitFor, 10*time.Millisecond)
	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code)
	code, body := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	for _, name := range []string{"roomcast_roomstate_kv_writes_total", "roomcast_roomstate_lag_sequences", "roomcast_roomstate_lag_seconds", "roomcast_roomstate_skipped_messages_total"} {
		require.Contains(t, body, name)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{NATSURL: "nats://127.0.0.1:4222"}
	require.NoError(t, ok.Validate())
	for _, bad := range []Config{
		{},
		{NATSURL: "http://x"},
		{NATSURL: ok.NATSURL, Durable: "a.b"},
		{NATSURL: ok.NATSURL, BatchSize: -1},
		{NATSURL: ok.NATSURL, BatchWait: -time.Second},
	} {
		require.Error(t, bad.Validate(), "%+v", bad)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
