package proto_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// gateNow is the store time the table's messages are checked against.
var gateNow = time.UnixMilli(1_700_000_000_000)

// TestCheckEnvelope drives every rule of the gate, through whichever reader
// decides (FuzzCheckEnvelope checks they agree).
func TestCheckEnvelope(t *testing.T) {
	tasks := mustRoom(t, "board-b1-tasks")
	board := mustRoom(t, "board-b1")
	chat := mustRoom(t, "chat-a-b")
	ok := []struct {
		room proto.Room
		env  string
		id   string
		at   int64
		ev   proto.Event
	}{
		{tasks, `{"event":"update-task","id":"t1","updatedAt":1700000000000,"diff":{"title":"x"}}`, "t1", 1700000000000, proto.EventUpdateTask},
		{tasks, ` { "updatedAt" : 5 , "id" : "t2", "event" : "delete-task" , "extra": [1, {"a": null}] } `, "t2", 5, proto.EventDeleteTask},
		{tasks, `{"event":"create-task","id":"t3","updatedAt":1,"data":{"s":"\u00e9\n"},"diff":null}`, "t3", 1, proto.EventCreateTask},
		{board, `{"event":"update-board","id":"b1","updatedAt":1700000300000,"diff":{}}`, "b1", 1700000300000, proto.EventUpdateBoard}, // exactly the bound
		{chat, `{"event":"new-message","id":"m1","updatedAt":2,"data":{"text":"hi"}}`, "m1", 2, proto.EventNewMessage},
		// Escapes in the envelope's own fields: the strict reader decides.
		{tasks, `{"ev\u0065nt":"update\u002dtask","id":"t\u0031","updatedAt":7,"diff":{}}`, "t1", 7, proto.EventUpdateTask},
		// Unknown keys differing in case are other fields.
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1,"Event":"x","ID":5,"Diff":{"a":1}}`, "t1", 1, proto.EventDeleteTask},
	}
	for _, c := range ok {
		got, err := proto.CheckEnvelope(c.room, []byte(c.env), gateNow)
		require.NoError(t, err, c.env)
		require.Equal(t, c.ev, got.Event, c.env)
		require.Equal(t, c.id, got.ID(), c.env)
		require.Equal(t, c.at, got.UpdatedAt, c.env)
	}

	deep := strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)
	bad := []struct {
		room proto.Room
		env  string
		why  proto.Reason
	}{
		{tasks, `not json`, proto.ReasonNotJSON},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1`, proto.ReasonNotJSON},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1,}`, proto.ReasonNotJSON},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1} x`, proto.ReasonNotJSON},
		{tasks, "{\"event\":\"delete-task\",\"id\":\"t\xff\",\"updatedAt\":1}", proto.ReasonNotJSON},
		{tasks, `[{"event":"delete-task","id":"t1","updatedAt":1}]`, proto.ReasonNotObject},
		{tasks, `"x"`, proto.ReasonNotObject},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1,"id":"t2"}`, proto.ReasonDuplicate},
		{tasks, `{"event":"delete-task","event":"update-task","id":"t1","updatedAt":1,"diff":{}}`, proto.ReasonDuplicate},
		{tasks, `{"id":"t1","updatedAt":1}`, proto.ReasonEvent},
		{tasks, `{"event":null,"id":"t1","updatedAt":1}`, proto.ReasonEvent},
		{tasks, `{"event":7,"id":"t1","updatedAt":1}`, proto.ReasonEvent},
		{tasks, `{"event":"rename-task","id":"t1","updatedAt":1}`, proto.ReasonEvent},
		{tasks, `{"Event":"delete-task","id":"t1","updatedAt":1}`, proto.ReasonEvent},
		{board, `{"event":"update-task","id":"t1","updatedAt":1,"diff":{}}`, proto.ReasonEventRoom},
		{chat, `{"event":"delete-task","id":"t1","updatedAt":1}`, proto.ReasonEventRoom},
		{tasks, `{"event":"delete-task","updatedAt":1}`, proto.ReasonID},
		{tasks, `{"event":"delete-task","id":"","updatedAt":1}`, proto.ReasonID},
		{tasks, `{"event":"delete-task","id":5,"updatedAt":1}`, proto.ReasonID},
		{tasks, `{"event":"delete-task","id":"` + strings.Repeat("x", proto.MaxResourceIDLen+1) + `","updatedAt":1}`, proto.ReasonID},
		{tasks, `{"event":"delete-task","id":"t1"}`, proto.ReasonUpdatedAt},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":"yesterday"}`, proto.ReasonUpdatedAt},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":"1700000000000"}`, proto.ReasonUpdatedAt},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":-5}`, proto.ReasonUpdatedAt},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":0}`, proto.ReasonUpdatedAt},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1.5}`, proto.ReasonUpdatedAt},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1e12}`, proto.ReasonUpdatedAt},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":99999999999999999999}`, proto.ReasonUpdatedAt},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":null}`, proto.ReasonUpdatedAt},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1700000300001}`, proto.ReasonFuture}, // 1 ms past the bound
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":4855000000000}`, proto.ReasonFuture}, // 100 years ahead
		{tasks, `{"event":"update-task","id":"t1","updatedAt":1,"diff":[1]}`, proto.ReasonPayload},
		{tasks, `{"event":"update-task","id":"t1","updatedAt":1,"diff":"x"}`, proto.ReasonPayload},
		{tasks, `{"event":"update-task","id":"t1","updatedAt":1}`, proto.ReasonPayload},
		{tasks, `{"event":"update-task","id":"t1","updatedAt":1,"diff":{},"data":{}}`, proto.ReasonPayload},
		{tasks, `{"event":"create-task","id":"t1","updatedAt":1,"data":null}`, proto.ReasonPayload},
		{tasks, `{"event":"create-task","id":"t1","updatedAt":1,"data":"x"}`, proto.ReasonPayload},
		{chat, `{"event":"new-message","id":"m1","updatedAt":1,"data":{},"diff":{}}`, proto.ReasonPayload},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1,"diff":{"a":1}}`, proto.ReasonPayload},
		{tasks, `{"event":"update-task","id":"t1","updatedAt":1,"diff":` + deep + `,"data":1}`, proto.ReasonPayload},
		{tasks, `{"event":"delete-task","id":"t1","updatedAt":1,"x":"` + strings.Repeat("a", proto.MaxEnvelopeSize) + `"}`, proto.ReasonTooLarge},
		{proto.Room{}, `{}`, proto.ReasonSubject},
		// Several faults: the first in Reasons' order.
		{board, `{"event":"update-task","updatedAt":"x","diff":[]}`, proto.ReasonEventRoom},
	}
	for _, c := range bad {
		_, err := proto.CheckEnvelope(c.room, []byte(c.env), gateNow)
		require.Error(t, err, c.env)
		require.Equal(t, c.why, proto.ReasonOf(err), "%.200s: %v", c.env, err)
		require.Contains(t, proto.Reasons, c.why)
	}

	// A client room takes any JSON value, nothing else.
	client := mustRoom(t, "client-c1")
	for _, s := range []string{`{"hello":1}`, `2`, ` "x" `, `[]`, `{"event":"nope"}`} {
		_, err := proto.CheckEnvelope(client, []byte(s), gateNow)
		require.NoError(t, err, s)
	}
	for _, s := range []string{`{nope`, ``, `1 2`} {
		_, err := proto.CheckEnvelope(client, []byte(s), gateNow)
		require.Equal(t, proto.ReasonNotJSON, proto.ReasonOf(err), s)
	}
}

func TestCheckSubject(t *testing.T) {
	env := []byte(`{"event":"new-message","id":"m1","updatedAt":1,"data":{}}`)
	r, _, err := proto.Subjects{}.CheckSubject("live.rooms.chat.a.b", env, gateNow)
	require.NoError(t, err)
	require.Equal(t, "chat-a-b", r.Name())
	for _, subj := range []string{"rooms.chat.b.a", "rooms.chat.a.a", "rooms.board.*", "rooms.board.b1.x", "other.board.b1"} {
		_, _, err := proto.Subjects{}.CheckSubject(subj, env, gateNow)
		require.Equal(t, proto.ReasonSubject, proto.ReasonOf(err), subj)
	}
}

func mustRoom(t *testing.T, name string) proto.Room {
	t.Helper()
	r, err := proto.ParseRoom(name)
	require.NoError(t, err)
	return r
}
