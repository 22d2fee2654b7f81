package proto

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Event names a change a domain service publishes. Every event of the seed is
// declared here, once.
type Event string

// The events of the seed ("Events should be declared in one place").
const (
	EventUpdateUser         Event = "update-user"
	EventCreateOrganization Event = "create-organization"
	EventUpdateOrganization Event = "update-organization"
	EventDeleteOrganization Event = "delete-organization"
	EventCreateBoard        Event = "create-board"
	EventUpdateBoard        Event = "update-board"
	EventDeleteBoard        Event = "delete-board"
	EventCreateTask         Event = "create-task"
	EventUpdateTask         Event = "update-task"
	EventDeleteTask         Event = "delete-task"
	EventCreateSprint       Event = "create-sprint"
	EventUpdateSprint       Event = "update-sprint"
	EventDeleteSprint       Event = "delete-sprint"
	EventNewMessage         Event = "new-message"
)

// Op is what an event does to its resource; it decides which envelope field
// carries the payload.
type Op uint8

const (
	OpCreate  Op = iota + 1 // whole resource in data
	OpUpdate                // changed fields in diff
	OpDelete                // id and updatedAt only
	OpMessage               // a chat message in data
)

func (o Op) String() string {
	switch o {
	case OpCreate:
		return "create"
	case OpUpdate:
		return "update"
	case OpDelete:
		return "delete"
	case OpMessage:
		return "message"
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

type eventSpec struct {
	op    Op
	rooms []RoomKind
}

var eventSpecs = map[Event]eventSpec{
	EventUpdateUser:         {OpUpdate, []RoomKind{KindUser}},
	EventCreateOrganization: {OpCreate, []RoomKind{KindOrg}},
	EventUpdateOrganization: {OpUpdate, []RoomKind{KindOrg}},
	EventDeleteOrganization: {OpDelete, []RoomKind{KindOrg}},
	EventCreateBoard:        {OpCreate, []RoomKind{KindBoard, KindOrg}},
	EventUpdateBoard:        {OpUpdate, []RoomKind{KindBoard, KindOrg}},
	EventDeleteBoard:        {OpDelete, []RoomKind{KindBoard, KindOrg}},
	EventCreateTask:         {OpCreate, []RoomKind{KindBoardTasks}},
	EventUpdateTask:         {OpUpdate, []RoomKind{KindBoardTasks}},
	EventDeleteTask:         {OpDelete, []RoomKind{KindBoardTasks}},
	EventCreateSprint:       {OpCreate, []RoomKind{KindBoardSprints}},
	EventUpdateSprint:       {OpUpdate, []RoomKind{KindBoardSprints}},
	EventDeleteSprint:       {OpDelete, []RoomKind{KindBoardSprints}},
	EventNewMessage:         {OpMessage, []RoomKind{KindChat}},
}

// Events lists every event, in the seed's order.
var Events = []Event{
	EventUpdateUser,
	EventCreateOrganization, EventUpdateOrganization, EventDeleteOrganization,
	EventCreateBoard, EventUpdateBoard, EventDeleteBoard,
	EventCreateTask, EventUpdateTask, EventDeleteTask,
	EventCreateSprint, EventUpdateSprint, EventDeleteSprint,
	EventNewMessage,
}

// Known reports whether e is one of Events.
func (e Event) Known() bool { _, ok := eventSpecs[e]; return ok }

// Op is what e does; 0 for an unknown event.
func (e Event) Op() Op { return eventSpecs[e].op }

// RoomKinds are the kinds of room e may be published to.
func (e Event) RoomKinds() []RoomKind { return eventSpecs[e].rooms }

// AllowedIn reports whether e may be published to r.
func (e Event) AllowedIn(r Room) bool {
	for _, k := range eventSpecs[e].rooms {
		if k == r.kind {
			return true
		}
	}
	return false
}

// Envelope is what a domain service publishes to a room and what a frontend
// receives as a broadcast's data:
//
//	{"event":"update-task","id":"t1","updatedAt":1700000000000,"diff":{"title":"x"}}
//
// Creates carry the whole resource in Data, updates the changed fields in
// Diff, deletes neither; new-message carries the message in Data. UpdatedAt
// is milliseconds since the Unix epoch, set by the publisher.
type Envelope struct {
	Event     Event           `json:"event"`
	ID        string          `json:"id"`
	UpdatedAt int64           `json:"updatedAt"`
	Diff      json.RawMessage `json:"diff,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
}

// MaxEnvelopeSize bounds a published envelope. NATS's own default max payload
// is 1 MiB; an envelope is a diff, so far less is plenty.
const MaxEnvelopeSize = 512 << 10

// MaxResourceIDLen bounds Envelope.ID.
const MaxResourceIDLen = 128

// Validate checks e against the design: a known event, a resource id, a
// positive updatedAt, and the payload field its kind calls for. What it
// cannot see without a room and a clock (the room's kind, updatedAt's bound
// in the future) the gate checks: CheckEnvelope, which Publisher applies.
func (e Envelope) Validate() error {
	spec, ok := eventSpecs[e.Event]
	if !ok {
		return fmt.Errorf("envelope: unknown event %q", e.Event)
	}
	if e.ID == "" {
		return fmt.Errorf("envelope: %s: id is empty", e.Event)
	}
	if len(e.ID) > MaxResourceIDLen {
		return fmt.Errorf("envelope: %s: id is %d bytes long, the limit is %d", e.Event, len(e.ID), MaxResourceIDLen)
	}
	if e.UpdatedAt <= 0 {
		return fmt.Errorf("envelope: %s %s: updatedAt must be milliseconds since the Unix epoch, got %d", e.Event, e.ID, e.UpdatedAt)
	}
	hasDiff, hasData := present(e.Diff), present(e.Data)
	switch spec.op {
	case OpCreate, OpMessage:
		if !hasData || hasDiff {
			return fmt.Errorf("envelope: %s %s: carries the resource in data, and no diff", e.Event, e.ID)
		}
		if !bytes.HasPrefix(bytes.TrimLeft(e.Data, " \t\r\n"), []byte("{")) {
			return fmt.Errorf("envelope: %s %s: data must be a JSON object", e.Event, e.ID)
		}
	case OpUpdate:
		if !hasDiff || hasData {
			return fmt.Errorf("envelope: %s %s: carries the changed fields in diff, and no data", e.Event, e.ID)
		}
		if !bytes.HasPrefix(bytes.TrimLeft(e.Diff, " \t\r\n"), []byte("{")) {
			return fmt.Errorf("envelope: %s %s: diff must be a JSON object", e.Event, e.ID)
		}
	case OpDelete:
		if hasDiff || hasData {
			return fmt.Errorf("envelope: %s %s: a delete carries only id and updatedAt", e.Event, e.ID)
		}
	}
	return nil
}

func present(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && !bytes.Equal(t, []byte("null"))
}

// ParseEnvelope decodes and validates an envelope.
func ParseEnvelope(b []byte) (Envelope, error) {
	if len(b) > MaxEnvelopeSize {
		return Envelope{}, fmt.Errorf("envelope: %d bytes, the limit is %d", len(b), MaxEnvelopeSize)
	}
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return Envelope{}, fmt.Errorf("envelope: %w", err)
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}
