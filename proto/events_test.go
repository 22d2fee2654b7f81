package proto_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func TestEventsDeclaredOnce(t *testing.T) {
	require.Len(t, proto.Events, 14, "the seed's events")
	seen := map[proto.Event]bool{}
	for _, e := range proto.Events {
		require.False(t, seen[e], "%s twice", e)
		seen[e] = true
		require.True(t, e.Known())
		require.NotZero(t, e.Op())
		require.NotEmpty(t, e.RoomKinds())
	}
	require.False(t, proto.Event("rename-task").Known())
}

func TestEventRooms(t *testing.T) {
	tasks, _ := proto.BoardTasksRoom("b1")
	sprints, _ := proto.BoardSprintsRoom("b1")
	board, _ := proto.BoardRoom("b1")
	org, _ := proto.OrgRoom("o1")
	user, _ := proto.UserRoom("u1")
	chat, _ := proto.ChatRoom("u1", "u2")
	client, _ := proto.ClientRoom("u1", "c1")
	allowed := map[proto.Event][]proto.Room{
		proto.EventUpdateUser:         {user},
		proto.EventCreateOrganization: {org},
		proto.EventUpdateOrganization: {org},
		proto.EventDeleteOrganization: {org},
		proto.EventCreateBoard:        {board, org},
		proto.EventUpdateBoard:        {board, org},
		proto.EventDeleteBoard:        {board, org},
		proto.EventCreateTask:         {tasks},
		proto.EventUpdateTask:         {tasks},
		proto.EventDeleteTask:         {tasks},
		proto.EventCreateSprint:       {sprints},
		proto.EventUpdateSprint:       {sprints},
		proto.EventDeleteSprint:       {sprints},
		proto.EventNewMessage:         {chat},
	}
	all := []proto.Room{tasks, sprints, board, org, user, chat, client}
	for _, e := range proto.Events {
		for _, r := range all {
			want := false
			for _, ok := range allowed[e] {
				want = want || ok == r
			}
			require.Equal(t, want, e.AllowedIn(r), "%s in %s", e, r)
		}
	}
}

func TestEnvelopeValidate(t *testing.T) {
	ok := []string{
		`{"event":"create-task","id":"t1","updatedAt":1,"data":{"title":"a"}}`,
		`{"event":"update-task","id":"t1","updatedAt":1,"diff":{"title":"b"}}`,
		`{"event":"delete-task","id":"t1","updatedAt":1}`,
		`{"event":"new-message","id":"m1","updatedAt":1,"data":{"text":"hi"}}`,
	}
	for _, s := range ok {
		_, err := proto.ParseEnvelope([]byte(s))
		require.NoError(t, err, s)
	}
	bad := map[string]string{
		`{"event":"rename-task","id":"t1","updatedAt":1}`:                      "unknown event",
		`{"event":"delete-task","updatedAt":1}`:                                "id is empty",
		`{"event":"delete-task","id":"t1"}`:                                    "updatedAt",
		`{"event":"delete-task","id":"t1","updatedAt":-5}`:                     "updatedAt",
		`{"event":"update-task","id":"t1","updatedAt":1,"data":{"title":"b"}}`: "diff",
		`{"event":"update-task","id":"t1","updatedAt":1,"diff":[1]}`:           "JSON object",
		`{"event":"create-task","id":"t1","updatedAt":1}`:                      "data",
		`{"event":"create-task","id":"t1","updatedAt":1,"data":null}`:          "data",
		`{"event":"delete-task","id":"t1","updatedAt":1,"diff":{"a":1}}`:       "only id",
		`{"event":"update-task","id":"t1","updatedAt":"soon","diff":{"a":1}}`:  "envelope",
		`not json`: "envelope",
		`{"event":"delete-task","id":"` + strings.Repeat("x", 129) + `","updatedAt":1}`: "limit",
	}
	for s, why := range bad {
		_, err := proto.ParseEnvelope([]byte(s))
		require.ErrorContains(t, err, why, s)
	}
	_, err := proto.ParseEnvelope(make([]byte, proto.MaxEnvelopeSize+1))
	require.ErrorContains(t, err, "limit")
}

func TestAckShapes(t *testing.T) {
	b, err := json.Marshal(proto.OK(nil))
	require.NoError(t, err)
	require.JSONEq(t, `{"ok":true,"data":null}`, string(b))
	b, err = json.Marshal(proto.OK(proto.RoomState{LastBroadcastTimestamp: 5, Seq: 7}))
	require.NoError(t, err)
	require.JSONEq(t, `{"ok":true,"data":{"lastBroadcastTimestamp":5,"seq":7}}`, string(b))
	b, err = json.Marshal(proto.Fail(proto.Errorf(proto.CodeForbidden, "not yours")))
	require.NoError(t, err)
	require.JSONEq(t, `{"ok":false,"error":{"code":"forbidden","message":"not yours"}}`, string(b))
	b, err = json.Marshal(proto.Fail(json.Unmarshal([]byte("{"), &struct{}{})))
	require.NoError(t, err)
	require.JSONEq(t, `{"ok":false,"error":{"code":"internal","message":"internal error"}}`, string(b), "internals do not leak")
}

func TestCursorValidate(t *testing.T) {
	since, seq, neg := int64(5), uint64(3), int64(-1)
	require.NoError(t, proto.Cursor{Since: &since}.Validate())
	require.NoError(t, proto.Cursor{AfterSeq: &seq}.Validate())
	require.Error(t, proto.Cursor{}.Validate())
	require.Error(t, proto.Cursor{Since: &since, AfterSeq: &seq}.Validate())
	require.Error(t, proto.Cursor{Since: &neg}.Validate())
	require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(proto.Cursor{}.Validate()))
}

func FuzzParseEnvelope(f *testing.F) {
	f.Add([]byte(`{"event":"update-task","id":"t1","updatedAt":1,"diff":{"title":"b"}}`))
	f.Add([]byte(`{"event":"new-message","id":"m1","updatedAt":1,"data":"x"}`))
	f.Add([]byte(`{"event":"delete-task","id":"t1","updatedAt":1,"diff":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := proto.ParseEnvelope(b)
		if err != nil {
			return
		}
		if !e.Event.Known() || e.ID == "" || e.UpdatedAt <= 0 {
			t.Fatalf("accepted an invalid envelope: %+v", e)
		}
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := proto.ParseEnvelope(out); err != nil {
			t.Fatalf("re-encoded envelope %s refused: %v", out, err)
		}
	})
}
