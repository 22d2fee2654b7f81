package proto

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Socket.IO event names: a frontend emits one event and listens to one.
const (
	IncomingEvent = "endpoint"  // client → server, with an ack
	OutgoingEvent = "broadcast" // server → client
)

// EndpointName names what a client asks of the gateway.
type EndpointName string

// The endpoints of the design.
const (
	EndpointAddToRoom            EndpointName = "addToRoom"
	EndpointRemoveFromRoom       EndpointName = "removeFromRoom"
	EndpointGetRoomState         EndpointName = "getRoomState"
	EndpointUpdateClient         EndpointName = "updateClient"
	EndpointGetChangesSince      EndpointName = "getChangesSince"
	EndpointGetChatMessagesSince EndpointName = "getChatMessagesSince"
)

// Endpoints lists every endpoint.
var Endpoints = []EndpointName{
	EndpointAddToRoom, EndpointRemoveFromRoom, EndpointGetRoomState,
	EndpointUpdateClient, EndpointGetChangesSince, EndpointGetChatMessagesSince,
}

// EndpointCall is the payload of emit("endpoint", call, ack).
type EndpointCall struct {
	EndpointName EndpointName    `json:"endpointName"`
	EndpointArgs json.RawMessage `json:"endpointArgs"`
}

// Ack is the single argument of every endpoint acknowledgement:
// {ok:true, data} or {ok:false, error:{code, message}}.
type Ack struct {
	OK    bool   `json:"ok"`
	Data  any    `json:"data,omitempty"`
	Error *Error `json:"error,omitempty"`
}

// OK wraps data in a successful Ack. Nil data is sent as null.
func OK(data any) Ack { return Ack{OK: true, Data: nullable{data}} }

// Fail wraps err in a failed Ack; an error that is not an *Error becomes
// CodeInternal with a generic message, so internals do not leak.
func Fail(err error) Ack {
	var e *Error
	if errors.As(err, &e) {
		return Ack{Error: e}
	}
	return Ack{Error: &Error{Code: CodeInternal, Message: "internal error"}}
}

// nullable makes a nil Data marshal as null instead of being omitted.
type nullable struct{ v any }

func (n nullable) MarshalJSON() ([]byte, error) { return json.Marshal(n.v) }

// AppendJSON appends a's JSON to b, as json.Marshal writes it. Data that is
// already JSON (a json.RawMessage, such as a service's reply passed on) is
// appended as it is: json.Marshal would scan and copy it once more to
// check and compact it, which for a hundred changes (~15 KB) cost more than
// reading them. Such data must be valid JSON (Request checks what it hands
// back); it is not compacted.
func (a Ack) AppendJSON(b []byte) ([]byte, error) {
	if n, ok := a.Data.(nullable); ok && a.OK && a.Error == nil {
		if raw, ok := n.v.(json.RawMessage); ok && len(raw) > 0 {
			b = append(b, `{"ok":true,"data":`...)
			b = append(b, raw...)
			return append(b, '}'), nil
		}
	}
	j, err := json.Marshal(a)
	if err != nil {
		return b, err
	}
	return append(b, j...), nil
}

// RoomArgs are the arguments of addToRoom, removeFromRoom and getRoomState.
type RoomArgs struct {
	RoomName string `json:"roomName"`
}

// RoomState is a room's state in KV ROOM_STATE and the answer of
// getRoomState: the largest updatedAt ever broadcast to the room, and the
// stream sequence of its latest message.
type RoomState struct {
	LastBroadcastTimestamp int64  `json:"lastBroadcastTimestamp"`
	Seq                    uint64 `json:"seq"`
}

// AddToRoomResult is addToRoom's ack data; the state fields are null when the
// room was never broadcast to.
type AddToRoomResult struct {
	RoomName               string  `json:"roomName"`
	LastBroadcastTimestamp *int64  `json:"lastBroadcastTimestamp"`
	Seq                    *uint64 `json:"seq"`
}

// UpdateClientArgs are updateClient's arguments.
type UpdateClientArgs struct {
	IsActive *bool `json:"isActive"`
}

// Cursor says where a history read starts: after a publisher timestamp
// (Since, ms; matched with >= and a clock-skew margin) or after a stream
// sequence (AfterSeq, exact). Exactly one is set.
type Cursor struct {
	Since    *int64  `json:"since,omitempty"`
	AfterSeq *uint64 `json:"afterSeq,omitempty"`
}

// Validate checks that exactly one of Since and AfterSeq is set.
func (c Cursor) Validate() error {
	switch {
	case c.Since == nil && c.AfterSeq == nil:
		return &Error{Code: CodeInvalidArgument, Message: "give since (ms) or afterSeq"}
	case c.Since != nil && c.AfterSeq != nil:
		return &Error{Code: CodeInvalidArgument, Message: "give since or afterSeq, not both"}
	case c.Since != nil && *c.Since < 0:
		return &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("since must be ms since the Unix epoch, got %d", *c.Since)}
	}
	return nil
}

// ChangesArgs are the arguments of getChangesSince and sync.changes.
type ChangesArgs struct {
	RoomName string `json:"roomName"`
	Cursor
	Limit int `json:"limit,omitempty"`
}

// Change is the latest change of one resource.
type Change struct {
	ID        string `json:"id"`
	UpdatedAt int64  `json:"updatedAt"`
	Deleted   bool   `json:"deleted"`
	Seq       uint64 `json:"seq"`
}

// ChangesResult answers getChangesSince. Complete is false when the stream no
// longer reaches back to the cursor: the client must refetch whole. Next,
// when set, continues an answer that the limit cut.
type ChangesResult struct {
	Changes  []Change `json:"changes"`
	Complete bool     `json:"complete"`
	Next     *Cursor  `json:"next,omitempty"`
}

// ChatArgs are the arguments of getChatMessagesSince and sync.chat.
type ChatArgs struct {
	RoomName string `json:"roomName"`
	Cursor
	Limit int `json:"limit,omitempty"`
}

// ChatResult answers getChatMessagesSince: envelopes in stream order.
type ChatResult struct {
	Messages []json.RawMessage `json:"messages"`
	HasMore  bool              `json:"hasMore"`
	Next     *Cursor           `json:"next,omitempty"`
	Complete bool              `json:"complete"`
}

// Broadcast is the single argument of emit("broadcast", …). Seq is the
// message's sequence in stream ROOMS, PrevSeq the sequence of the room's
// previous message (0: none). A client whose last seq for the room differs
// from PrevSeq missed something and resyncs. Client rooms are not stored:
// their broadcasts carry 0 for both.
type Broadcast struct {
	Destination string          `json:"destination"`
	Data        json.RawMessage `json:"data"`
	Seq         uint64          `json:"seq"`
	PrevSeq     uint64          `json:"prevSeq"`
}
