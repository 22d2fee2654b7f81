package gateway

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func TestAddToRoomAndAuthorization(t *testing.T) {
	e := newEnv(t)
	ts := int64(1700000000000)
	e.answerRoomState(map[string]*proto.RoomState{"board-b2": {LastBroadcastTimestamp: ts, Seq: 7}})
	var mu sync.Mutex
	asked := map[string]int{}
	e.answerAuthz(func(u, room string) bool {
		mu.Lock()
		asked[u+" "+room]++
		mu.Unlock()
		return u == "u1" && (room == "board-b1" || room == "board-b2" || room == "org-o1")
	})
	tg := e.startGateway()
	c := connectUser(t, tg, "u1")

	// Never broadcast to: nulls.
	require.JSONEq(t, `{"roomName":"board-b1","lastBroadcastTimestamp":null,"seq":null}`, string(c.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})))
	require.JSONEq(t, `{"roomName":"board-b2","lastBroadcastTimestamp":1700000000000,"seq":7}`, string(c.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b2"})))
	require.ElementsMatch(t, []string{
		"live.rooms.board.b1", "live.rooms.board.b1.tasks", "live.rooms.board.b1.sprints",
		"live.rooms.board.b2", "live.rooms.board.b2.tasks", "live.rooms.board.b2.sprints"}, tg.RoomSubscriptions())
	// A child room is authorized like its board, from the cache.
	c.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1-tasks"})
	mu.Lock()
	require.Equal(t, 1, asked["u1 board-b1"])
	mu.Unlock()
	require.JSONEq(t, `{"lastBroadcastTimestamp":1700000000000,"seq":7}`, string(c.mustOK("getRoomState", proto.RoomArgs{RoomName: "board-b2"})))
	require.JSONEq(t, `null`, string(c.mustOK("getRoomState", proto.RoomArgs{RoomName: "org-o1"})))

	// Refusals change nothing.
	before := tg.RoomSubscriptions()
	c.mustFail(proto.CodeForbidden, "addToRoom", proto.RoomArgs{RoomName: "board-b9"})
	c.mustFail(proto.CodeInvalidArgument, "addToRoom", proto.RoomArgs{RoomName: "board-*"})
	c.mustFail(proto.CodeInvalidArgument, "addToRoom", proto.RoomArgs{RoomName: "board-b1.x"})
	c.mustFail(proto.CodeForbidden, "addToRoom", proto.RoomArgs{RoomName: "user-u2"})
	c.mustFail(proto.CodeForbidden, "addToRoom", proto.RoomArgs{RoomName: "client-x"})
	c.mustFail(proto.CodeForbidden, "addToRoom", proto.RoomArgs{RoomName: "chat-u2-u3"})
	c.mustFail(proto.CodeForbidden, "getRoomState", proto.RoomArgs{RoomName: "board-b9"})
	c.mustFail(proto.CodeInvalidArgument, "nope", proto.RoomArgs{RoomName: "board-b1"})
	c.mustFail(proto.CodeInvalidArgument, "addToRoom", map[string]any{"room": "board-b1"})
	c.mustFail(proto.CodeInvalidArgument, "addToRoom", "board-b1")
	c.mustFail(proto.CodeInvalidArgument, "updateClient", map[string]any{})
	a := c.callRaw(`{"endpointName":"addToRoom"}`)
	require.Equal(t, proto.CodeInvalidArgument, a.Error.Code)
	require.ElementsMatch(t, before, tg.RoomSubscriptions())
	// Chat and own user room by name alone.
	c.mustOK("addToRoom", proto.RoomArgs{RoomName: "chat-u9-u1"})
	c.mustOK("addToRoom", proto.RoomArgs{RoomName: "user-u1"})

	// removeFromRoom of a child leaves the board's list (shared).
	require.JSONEq(t, `{}`, string(c.mustOK("removeFromRoom", proto.RoomArgs{RoomName: "board-b1-tasks"})))
	require.Equal(t, 0, tg.roomMembers(mustRoom(t, "board-b1")))
	require.NotContains(t, tg.RoomSubscriptions(), "live.rooms.board.b1")
	c.mustFail(proto.CodeForbidden, "removeFromRoom", proto.RoomArgs{RoomName: "client-x"})
	c.mustOK("removeFromRoom", proto.RoomArgs{RoomName: "board-b7"}) // not in it: nothing to do
}

func TestAuthzUnansweredFailsClosed(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	tg := e.startGateway(func(c *Config) { c.AuthzTimeout = 100 * time.Millisecond })
	c := connectUser(t, tg, "u1")
	// Nobody answers authz.join.
	c.mustFail(proto.CodeUnavailable, "addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	// A responder that never replies in time.
	sub, err := e.nc.Subscribe(proto.SubjectAuthzJoin, func(*nats.Msg) {})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, e.nc.Flush())
	c.mustFail(proto.CodeUnavailable, "addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	require.Equal(t, 0, tg.roomMembers(mustRoom(t, "board-b1")))
}

func TestAddToRoomUndoneWhenStateUnavailable(t *testing.T) {
	e := newEnv(t)
	e.answerAuthz(func(string, string) bool { return true })
	tg := e.startGateway(func(c *Config) { c.RequestTimeout = 200 * time.Millisecond })
	c := connectUser(t, tg, "u1")
	c.mustFail(proto.CodeUnavailable, "addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	require.Equal(t, 0, tg.roomMembers(mustRoom(t, "board-b1")))
	require.Empty(t, tg.RoomSubscriptions())
	c.mustFail(proto.CodeUnavailable, "getRoomState", proto.RoomArgs{RoomName: "board-b1"})
}

func TestHistoryEndpointsForward(t *testing.T) {
	e := newEnv(t)
	e.answerAuthz(func(u, room string) bool { return room == "board-b1" })
	var got []string
	var mu sync.Mutex
	for _, subj := range []string{proto.SubjectSyncChanges, proto.SubjectSyncChat} {
		sub, err := e.nc.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			got = append(got, m.Subject+" "+string(m.Data))
			mu.Unlock()
			if m.Subject == proto.SubjectSyncChanges && strings.Contains(string(m.Data), "sprints") {
				_ = proto.Respond(e.nc, m.Reply, nil, proto.RateLimited(250*time.Millisecond, "too many history reads of this user in flight"))
				return
			}
			if m.Subject == proto.SubjectSyncChanges {
				_ = m.Respond([]byte(`{"changes":[{"id":"t1","updatedAt":5,"deleted":false,"seq":3}],"complete":true}`))
				return
			}
			r := nats.NewMsg(m.Reply)
			r.Header.Set(proto.HeaderErrorCode, string(proto.CodeNotFound))
			r.Header.Set(proto.HeaderError, "no such chat")
			_ = m.RespondMsg(r)
		})
		require.NoError(t, err)
		defer sub.Unsubscribe()
	}
	require.NoError(t, e.nc.Flush())
	tg := e.startGateway()
	c := connectUser(t, tg, "u1")
	require.JSONEq(t, `{"changes":[{"id":"t1","updatedAt":5,"deleted":false,"seq":3}],"complete":true}`,
		string(c.mustOK("getChangesSince", map[string]any{"roomName": "board-b1-tasks", "since": 4, "limit": 5000})))
	err := c.mustFail(proto.CodeNotFound, "getChatMessagesSince", map[string]any{"roomName": "chat-u2-u1", "afterSeq": 1, "limit": 10})
	require.Equal(t, "no such chat", err.Message)
	// sync's refusal reaches the client with its retry hint.
	err = c.mustFail(proto.CodeRateLimited, "getChangesSince", map[string]any{"roomName": "board-b1-sprints", "afterSeq": 1})
	require.Equal(t, int64(250), err.RetryAfterMs)
	// The user who asks goes with each read (sync shares its reads between
	// users); a client cannot name one.
	mu.Lock()
	require.Equal(t, []string{
		// A limit above sync's maximum goes as asked: sync cuts it.
		`sync.changes {"roomName":"board-b1-tasks","since":4,"limit":5000,"userId":"u1"}`,
		`sync.chat {"roomName":"chat-u1-u2","afterSeq":1,"limit":10,"userId":"u1"}`,
		`sync.changes {"roomName":"board-b1-sprints","afterSeq":1,"userId":"u1"}`,
	}, got)
	mu.Unlock()
	c.mustFail(proto.CodeInvalidArgument, "getChangesSince", map[string]any{"roomName": "board-b1-tasks", "since": 4, "userId": "u2"})
	c.mustFail(proto.CodeForbidden, "getChangesSince", map[string]any{"roomName": "board-b2", "since": 4})
	c.mustFail(proto.CodeForbidden, "getChatMessagesSince", map[string]any{"roomName": "chat-u2-u3", "since": 4})
	c.mustFail(proto.CodeInvalidArgument, "getChangesSince", map[string]any{"roomName": "board-b1"})
	c.mustFail(proto.CodeInvalidArgument, "getChangesSince", map[string]any{"roomName": "board-b1", "since": 1, "afterSeq": 2})
	c.mustFail(proto.CodeInvalidArgument, "getChangesSince", map[string]any{"roomName": "client-x", "since": 1})
	c.mustFail(proto.CodeInvalidArgument, "getChatMessagesSince", map[string]any{"roomName": "board-b1", "since": 1})
	c.mustFail(proto.CodeInvalidArgument, "getChatMessagesSince", map[string]any{"roomName": "chat-u1-u2", "since": 1, "limit": -1})
}

func TestRateLimitRoomCapAndNoAck(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	tg := e.startGateway(func(c *Config) {
		c.RateLimit = 0.001
		c.RateBurst = 5 // the CONNECT, three joins and the call without ack
		c.MaxRoomsPerSocket = 2
	})
	c := connectUser(t, tg, "u1")
	c.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
	c.mustOK("addToRoom", proto.RoomArgs{RoomName: "org-o1"})
	c.mustFail(proto.CodeInvalidArgument, "addToRoom", proto.RoomArgs{RoomName: "org-o2"})
	// A call without an ack id is served (counted) but answered by nothing:
	// the next ack is the next call's.
	c.send(`42["endpoint",{"endpointName":"updateClient","endpointArgs":{"isActive":true}}]`)
	c.mustFail(proto.CodeRateLimited, "updateClient", map[string]any{"isActive": true})
	require.Equal(t, float64(1), tg.counter(tg.m.calls.WithLabelValues("updateClient", "rate_limited")))
	require.Equal(t, float64(1), tg.counter(tg.m.calls.WithLabelValues("updateClient", "ok")))
}

// sid is the socket id the gateway gave c (its client room's id, as c
// connected without a clientId).
func (c *client) sid(t *testing.T, tg *testGateway) string {
	t.Helper()
	for _, s := range tg.allSockets() {
		if s.client == s.id {
			return s.id
		}
	}
	t.Fatal("no socket")
	return ""
}

func FuzzEndpointArgs(f *testing.F) {
	for _, s := range []string{`{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}`,
		`{"endpointName":"getChangesSince","endpointArgs":{"roomName":"board-b1-tasks","since":1}}`,
		`{"endpointName":"getChatMessagesSince","endpointArgs":{"roomName":"chat-a-b","afterSeq":1,"limit":5}}`,
		`{"endpointName":"updateClient","endpointArgs":{"isActive":true}}`, `{}`, `null`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		call, err := decodeCall([]json.RawMessage{b})
		if err != nil {
			require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err))
			return
		}
		if r, err := decodeRoomArgs(call.EndpointArgs); err == nil {
			// A room that passed is safe as a subject token.
			_ = proto.Subjects{}.Live(r)
			require.NotContains(t, r.Name(), "*")
			require.NotContains(t, r.Name(), ".")
		} else {
			require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err))
		}
		_, _ = decodeUpdateClient(call.EndpointArgs)
		if a, r, err := decodeChangesArgs(call.EndpointArgs); err == nil {
			require.NoError(t, a.Cursor.Validate())
			require.True(t, r.Kind().Stored())
		}
		if _, r, err := decodeChatArgs(call.EndpointArgs); err == nil {
			require.Equal(t, proto.KindChat, r.Kind())
		}
	})
}

// TestQuickDecodersTakeTheClientSpelling: the spelling socket.io-client
// sends is read by the quick decoders; other spellings of the same call are
// left to the strict decoder, which refuses what it refused before.
func TestQuickDecodersTakeTheClientSpelling(t *testing.T) {
	call, ok := quickCall([]byte(`{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}`))
	require.True(t, ok)
	require.Equal(t, proto.EndpointAddToRoom, call.EndpointName)
	name, ok := quickRoomArgs(call.EndpointArgs)
	require.True(t, ok)
	require.Equal(t, "board-b1", name)

	for _, raw := range []string{
		`{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"},"extra":1}`,
		`{"endpointName":"addToRoom","endpointArgs":{},"endpointName":"removeFromRoom"}`,
		`{"endpointName":"add\u0054oRoom","endpointArgs":{}}`,
		`{ "endpointName":"addToRoom","endpointArgs":{}}`,
	} {
		_, ok := quickCall([]byte(raw))
		require.False(t, ok, raw)
	}
	_, err := decodeCall([]json.RawMessage{json.RawMessage(`{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"},"extra":1}`)})
	require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err), "an unknown key is still refused")
	for _, raw := range []string{`{"roomName":"board-b1","x":1}`, `{"roomName":"bo\"ard"}`, `{"roomName":"a\u002eb"}`} {
		_, ok := quickRoomArgs([]byte(raw))
		require.False(t, ok, raw)
	}
	_, err = decodeRoomArgs(json.RawMessage(`{"roomName":"board-b1","x":1}`))
	require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err))
}

// FuzzQuickDecoders: whatever the quick decoders accept, the strict decoder
// reads the same way.
func FuzzQuickDecoders(f *testing.F) {
	f.Add([]byte(`{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}`))
	f.Add([]byte(`{"endpointName":"updateClient","endpointArgs":{"isActive":true}}`))
	f.Add([]byte(`{"roomName":"chat-a-b"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if call, ok := quickCall(b); ok && knownEndpoint(string(call.EndpointName)) {
			var strict proto.EndpointCall
			require.NoError(t, strictDecode(b, &strict))
			require.Equal(t, strict.EndpointName, call.EndpointName)
			require.JSONEq(t, string(strict.EndpointArgs), string(call.EndpointArgs))
		}
		if name, ok := quickRoomArgs(b); ok && utf8.Valid(b) {
			var strict proto.RoomArgs
			require.NoError(t, strictDecode(b, &strict))
			require.Equal(t, strict.RoomName, name)
		}
	})
}

// FuzzArgumentErrors: whatever a client sends as arguments, a refusal says
// what is wrong in the client's terms: never encoding/json's text, which
// names Go types and fields.
func FuzzArgumentErrors(f *testing.F) {
	f.Add([]byte(`{"roomName":"board-b1-tasks","since":"yesterday"}`))
	f.Add([]byte(`{"roomName":"board-b1-tasks","afterSeq":-1,"limit":1e99}`))
	f.Add([]byte(`{"endpointName":7,"endpointArgs":[]}`))
	f.Add([]byte(`{"isActive":"yes","x":{}}`))
	f.Add([]byte(`{"roomName":"a",}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{&proto.ChangesArgs{}, &proto.ChatArgs{}, &proto.RoomArgs{}, &proto.UpdateClientArgs{}, &proto.EndpointCall{}} {
			err := strictDecode(b, v)
			if err == nil {
				continue
			}
			var pe *proto.Error
			require.ErrorAs(t, err, &pe)
			require.Equal(t, proto.CodeInvalidArgument, pe.Code)
			for _, word := range []string{"json:", "Go ", "struct", "int64", "uint64", "RawMessage", "proto.", "unmarshal"} {
				require.NotContains(t, pe.Message, word, "%T from %q", v, b)
			}
		}
	})
}
