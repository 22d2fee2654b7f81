package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// The gate: one decision, shared by every service, on whether a message
// published to a room is a valid envelope. The gateway applies it before a
// live broadcast, roomstate before folding into ROOM_STATE, sync before
// returning history, so what a client that stayed connected saw and what a
// client that resynced reads are the same set (DESIGN.md, "One gate for
// envelopes"). It is also what Publisher refuses to publish.
//
// It runs on every live message, so it has two readers of the same rules: a
// one-pass scanner that validates the JSON and picks out the envelope's
// fields without allocating, and a strict reader on encoding/json that
// decides whatever the scanner declines (escapes in the envelope's own keys,
// event or id, deep nesting, anything malformed). FuzzCheckEnvelope checks
// that the two agree wherever the scanner decides.

// MaxFutureSkew is how far ahead of its store time (the NATS server's clock
// when stream ROOMS stored it) an envelope's updatedAt may be. Further ahead
// and the envelope is refused (ReasonFuture): one message dated years ahead
// would otherwise pin its room's lastBroadcastTimestamp there for good.
//
// Five minutes is the clock skew sync already tolerates the other way
// (backfill.DefaultSkewMargin), far beyond what NTP leaves between hosts. It
// is a constant of the contract, not a setting: the gateway, roomstate and
// sync must draw the same line, or they would disagree on what happened.
// Measured against the store time, not against each service's clock, the
// decision for a stored message never changes with when or where it is read.
const MaxFutureSkew = 5 * time.Minute

// Reason is why the gate refused a message: a small closed set, usable as a
// metric label (Reasons lists it).
type Reason string

// The reasons, in the order the gate checks them: a message with several
// faults is refused for the first.
const (
	ReasonSubject   Reason = "subject"         // not a room subject (unknown kind, bad id, unsorted chat members, a client room in the stream)
	ReasonTooLarge  Reason = "too_large"       // more than MaxEnvelopeSize bytes
	ReasonNotJSON   Reason = "not_json"        // not JSON, or not UTF-8
	ReasonNotObject Reason = "not_object"      // JSON, but not an object
	ReasonDuplicate Reason = "duplicate_field" // event, id, updatedAt, diff or data given twice
	ReasonEvent     Reason = "event"           // event missing, not a string, or unknown
	ReasonEventRoom Reason = "event_room"      // event not allowed in this kind of room
	ReasonID        Reason = "id"              // id missing, not a string, empty or too long
	ReasonUpdatedAt Reason = "updated_at"      // updatedAt missing, not an integer, or not positive
	ReasonFuture    Reason = "future"          // updatedAt more than MaxFutureSkew ahead of the store time
	ReasonPayload   Reason = "payload"         // diff or data not what the event carries
)

// Reasons lists every Reason, for metrics that pre-create their labels.
var Reasons = []Reason{
	ReasonSubject, ReasonTooLarge, ReasonNotJSON, ReasonNotObject, ReasonDuplicate,
	ReasonEvent, ReasonEventRoom, ReasonID, ReasonUpdatedAt, ReasonFuture, ReasonPayload,
}

// RefusedError is the gate's refusal: its reason and what exactly was wrong.
type RefusedError struct {
	Reason Reason
	Detail string
}

func (e *RefusedError) Error() string {
	return "envelope refused (" + string(e.Reason) + "): " + e.Detail
}

func refuse(r Reason, format string, args ...any) error {
	return &RefusedError{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf is the reason of a gate refusal, "" when err is not one.
func ReasonOf(err error) Reason {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}

// Checked is what the gate read of a message it let through. For a client
// room (any JSON value, no envelope) it is the zero Checked.
type Checked struct {
	Event     Event
	UpdatedAt int64
	id        []byte // may alias the message
}

// ID is the envelope's resource id.
func (c Checked) ID() string { return string(c.id) }

// CheckSubject is CheckEnvelope for a message as NATS delivered it: its room
// is read from its subject (stored rooms.… or live.rooms.…), and a subject
// that is not exactly a room's is refused with ReasonSubject.
func (s Subjects) CheckSubject(subject string, data []byte, storedAt time.Time) (Room, Checked, error) {
	r, err := s.RoomOf(subject)
	if err != nil {
		return Room{}, Checked{}, &RefusedError{Reason: ReasonSubject, Detail: err.Error()}
	}
	c, err := CheckEnvelope(r, data, storedAt)
	return r, c, err
}

// CheckEnvelope decides whether data, published to room, is a valid
// envelope: at most MaxEnvelopeSize bytes of UTF-8 JSON; an object whose
// event is known and allowed in the room's kind, whose id is a non-empty
// string of at most MaxResourceIDLen bytes and whose updatedAt is a positive
// integer no more than MaxFutureSkew after storedAt; carrying the payload its
// event calls for (data, an object, for creates and new-message; diff, an
// object, for updates; neither for deletes; a null one counts as absent).
// Other fields are let through untouched. The envelope's own keys are
// matched exactly (case included) and may each appear once.
//
// storedAt is the message's store time in stream ROOMS; where there is none
// (a client room), the receiver's clock. A client room carries any JSON value
// (a tab's direct messages are no envelope), within the size limit.
//
// A refusal is a *RefusedError (see ReasonOf).
func CheckEnvelope(room Room, data []byte, storedAt time.Time) (Checked, error) {
	if c, err, ok := checkFast(room, data, storedAt); ok {
		return c, err
	}
	return checkStrict(room, data, storedAt)
}

// precheck is what both readers check first: a room, the size, UTF-8.
func precheck(room Room, data []byte) error {
	if room.IsZero() {
		return refuse(ReasonSubject, "no room")
	}
	if len(data) > MaxEnvelopeSize {
		return refuse(ReasonTooLarge, "%d bytes, the limit is %d", len(data), MaxEnvelopeSize)
	}
	if !utf8.Valid(data) {
		return refuse(ReasonNotJSON, "not UTF-8")
	}
	return nil
}

// checkFast decides with the scanner; ok is false when it cannot, and the
// strict reader must.
func checkFast(room Room, data []byte, storedAt time.Time) (c Checked, err error, ok bool) {
	if err := precheck(room, data); err != nil {
		return Checked{}, err, true
	}
	s := scanner{b: data}
	if room.kind == KindClient {
		s.ws()
		if _, _, ok := s.value(0); !ok {
			return Checked{}, nil, false
		}
		s.ws()
		return Checked{}, nil, s.i == len(s.b)
	}
	f, ok := s.fields()
	if !ok {
		return Checked{}, nil, false
	}
	c, err = judge(room, &f, storedAt)
	return c, err, true
}

// checkStrict decides with encoding/json.
func checkStrict(room Room, data []byte, storedAt time.Time) (Checked, error) {
	if err := precheck(room, data); err != nil {
		return Checked{}, err
	}
	if !json.Valid(data) {
		return Checked{}, refuse(ReasonNotJSON, "not valid JSON")
	}
	if room.kind == KindClient {
		return Checked{}, nil
	}
	f, err := strictFields(data)
	if err != nil {
		return Checked{}, err
	}
	return judge(room, &f, storedAt)
}

// valKind is what kind of JSON value an envelope field holds.
type valKind uint8

const (
	absent valKind = iota
	vNull
	vString
	vNumber
	vObject
	vOther // true, false, an array
)

func (k valKind) String() string {
	return [...]string{"absent", "null", "a string", "a number", "an object", "a boolean or an array"}[k]
}

// field is one envelope field as read: its kind, and for a string its
// (unescaped) content, for a number its literal.
type field struct {
	kind valKind
	raw  []byte
}

// fields are the envelope's own fields as either reader found them.
type fields struct {
	event, id, updatedAt, diff, data field
	dup                              string // the first of them given twice
}

// slot is where key's value goes, nil for a field the gate does not read.
func (f *fields) slot(key []byte) (*field, string) {
	switch string(key) {
	case "event":
		return &f.event, "event"
	case "id":
		return &f.id, "id"
	case "updatedAt":
		return &f.updatedAt, "updatedAt"
	case "diff":
		return &f.diff, "diff"
	case "data":
		return &f.data, "data"
	}
	return nil, ""
}

func (f field) present() bool { return f.kind != absent && f.kind != vNull }

// judge applies the envelope's rules to what a reader found.
func judge(room Room, f *fields, storedAt time.Time) (Checked, error) {
	if f.dup != "" {
		return Checked{}, refuse(ReasonDuplicate, "%q appears more than once", f.dup)
	}
	if f.event.kind != vString {
		return Checked{}, refuse(ReasonEvent, "event is %s, want a string", f.event.kind)
	}
	ev, ok := eventNamed(f.event.raw)
	if !ok {
		return Checked{}, refuse(ReasonEvent, "unknown event %.64q", f.event.raw)
	}
	if !ev.AllowedIn(room) {
		return Checked{}, refuse(ReasonEventRoom, "%s events go to %v rooms, not to %s", ev, ev.RoomKinds(), room)
	}
	switch {
	case f.id.kind != vString:
		return Checked{}, refuse(ReasonID, "%s: id is %s, want a string", ev, f.id.kind)
	case len(f.id.raw) == 0:
		return Checked{}, refuse(ReasonID, "%s: id is empty", ev)
	case len(f.id.raw) > MaxResourceIDLen:
		return Checked{}, refuse(ReasonID, "%s: id is %d bytes long, the limit is %d", ev, len(f.id.raw), MaxResourceIDLen)
	}
	if f.updatedAt.kind != vNumber {
		return Checked{}, refuse(ReasonUpdatedAt, "%s %.64q: updatedAt is %s, want milliseconds since the Unix epoch", ev, f.id.raw, f.updatedAt.kind)
	}
	ms, ok := positiveInt(f.updatedAt.raw)
	if !ok {
		return Checked{}, refuse(ReasonUpdatedAt, "%s %.64q: updatedAt %.32s is not a positive integer of milliseconds since the Unix epoch", ev, f.id.raw, f.updatedAt.raw)
	}
	if limit := storedAt.UnixMilli() + MaxFutureSkew.Milliseconds(); ms > limit {
		return Checked{}, refuse(ReasonFuture, "%s %.64q: updatedAt %d is %s ahead of its store time, the limit is %s", ev, f.id.raw, ms, time.Duration(ms-storedAt.UnixMilli())*time.Millisecond, MaxFutureSkew)
	}
	switch ev.Op() {
	case OpCreate, OpMessage:
		if f.data.kind != vObject || f.diff.present() {
			return Checked{}, refuse(ReasonPayload, "%s %.64q: carries the resource in data, an object (got %s), and no diff", ev, f.id.raw, f.data.kind)
		}
	case OpUpdate:
		if f.diff.kind != vObject || f.data.present() {
			return Checked{}, refuse(ReasonPayload, "%s %.64q: carries the changed fields in diff, an object (got %s), and no data", ev, f.id.raw, f.diff.kind)
		}
	case OpDelete:
		if f.diff.present() || f.data.present() {
			return Checked{}, refuse(ReasonPayload, "%s %.64q: a delete carries only id and updatedAt", ev, f.id.raw)
		}
	}
	return Checked{Event: ev, UpdatedAt: ms, id: f.id.raw}, nil
}

// eventNamed is the declared event named b, without allocating.
func eventNamed(b []byte) (Event, bool) {
	for _, e := range Events {
		if string(b) == string(e) {
			return e, true
		}
	}
	return "", false
}

// positiveInt reads a JSON number literal as an integer above zero that
// fits an int64: no sign, fraction or exponent.
func positiveInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, n > 0
}

// strictFields reads the envelope's fields with encoding/json; data is
// valid JSON.
func strictFields(data []byte) (fields, error) {
	var f fields
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return f, refuse(ReasonNotJSON, "not valid JSON")
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return f, refuse(ReasonNotObject, "an envelope is a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return f, refuse(ReasonNotJSON, "not valid JSON")
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return f, refuse(ReasonNotJSON, "not valid JSON")
		}
		dst, name := f.slot([]byte(key))
		if dst == nil {
			continue
		}
		if dst.kind != absent && f.dup == "" {
			f.dup = name
		}
		*dst = field{}
		switch c := raw[0]; {
		case c == 'n':
			dst.kind = vNull
		case c == '{':
			dst.kind = vObject
		case c == '"':
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return f, refuse(ReasonNotJSON, "not valid JSON")
			}
			dst.kind, dst.raw = vString, []byte(s)
		case c == '-' || c >= '0' && c <= '9':
			dst.kind, dst.raw = vNumber, raw
		default:
			dst.kind = vOther
		}
	}
	return f, nil
}

// maxScanDepth is the deepest nesting the scanner reads; deeper, it leaves
// the decision to the strict reader.
const maxScanDepth = 64

// scanner is the fast reader: one pass over the bytes, no allocation. Every
// method returns ok false on anything it does not read (malformed JSON, an
// escape where a field's value is needed): the strict reader then decides.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// fields reads the top-level object and the envelope's fields in it.
func (s *scanner) fields() (f fields, ok bool) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return f, false
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
	} else {
		for {
			if s.i >= len(s.b) || s.b[s.i] != '"' {
				return f, false
			}
			key, escaped, ok := s.str()
			if !ok || escaped {
				return f, false
			}
			if !s.colon() {
				return f, false
			}
			dst, name := f.slot(key)
			start := s.i
			kind, escaped, ok := s.value(1)
			if !ok {
				return f, false
			}
			if dst != nil {
				if dst.kind != absent && f.dup == "" {
					f.dup = name
				}
				*dst = field{kind: kind}
				switch kind {
				case vString:
					if escaped {
						return f, false
					}
					dst.raw = s.b[start+1 : s.i-1]
				case vNumber:
					dst.raw = s.b[start:s.i]
				}
			}
			if !s.next('}') {
				return f, false
			}
			if s.b[s.i-1] == '}' {
				break
			}
		}
	}
	s.ws()
	return f, s.i == len(s.b)
}

// colon reads the ':' after a key and the blanks around it.
func (s *scanner) colon() bool {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != ':' {
		return false
	}
	s.i++
	s.ws()
	return true
}

// next reads what follows a member or element: ',' (then blanks) or end.
func (s *scanner) next(end byte) bool {
	s.ws()
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case ',':
		s.i++
		s.ws()
		return true
	case end:
		s.i++
		return true
	}
	return false
}

// value reads one JSON value; escaped tells whether a string held escapes.
func (s *scanner) value(depth int) (kind valKind, escaped, ok bool) {
	if s.i >= len(s.b) {
		return 0, false, false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, escaped, ok = s.str()
		return vString, escaped, ok
	case c == '{':
		return vObject, false, s.container(depth+1, '}')
	case c == '[':
		return vOther, false, s.container(depth+1, ']')
	case c == 't':
		return vOther, false, s.literal("true")
	case c == 'f':
		return vOther, false, s.literal("false")
	case c == 'n':
		return vNull, false, s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return vNumber, false, s.number()
	}
	return 0, false, false
}

// container reads an object or an array, whose opening byte is at s.i.
func (s *scanner) container(depth int, end byte) bool {
	if depth > maxScanDepth {
		return false
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == end {
		s.i++
		return true
	}
	for {
		if end == '}' {
			if s.i >= len(s.b) || s.b[s.i] != '"' {
				return false
			}
			if _, _, ok := s.str(); !ok || !s.colon() {
				return false
			}
		}
		if _, _, ok := s.value(depth); !ok || !s.next(end) {
			return false
		}
		if s.b[s.i-1] == end {
			return true
		}
	}
}

// str reads a string whose opening quote is at s.i and returns its bytes
// between the quotes, as written.
func (s *scanner) str() (content []byte, escaped, ok bool) {
	start := s.i + 1
	for i := start; i < len(s.b); {
		switch c := s.b[i]; {
		case c == '"':
			s.i = i + 1
			return s.b[start:i], escaped, true
		case c == '\\':
			escaped = true
			if i+1 >= len(s.b) {
				return nil, false, false
			}
			switch s.b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(s.b) || !isHex4(s.b[i+2:i+6]) {
					return nil, false, false
				}
				i += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			i++
		}
	}
	return nil, false, false
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (s *scanner) literal(lit string) bool {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// number reads -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	b, i := s.b, s.i
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	s.i = i
	return true
}
