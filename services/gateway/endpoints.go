package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"

	"github.com/roomcast/roomcast/proto"
)

// decodeCall decodes the arguments of emit("endpoint", call): exactly one
// object with a known endpointName.
func decodeCall(args []json.RawMessage) (proto.EndpointCall, error) {
	var call proto.EndpointCall
	if len(args) != 1 {
		return call, proto.Errorf(proto.CodeInvalidArgument, "emit one argument, {endpointName, endpointArgs}, and an ack")
	}
	if c, ok := quickCall(args[0]); ok && knownEndpoint(string(c.EndpointName)) {
		return c, nil
	}
	if err := strictDecode(args[0], &call); err != nil {
		msg := "arguments could not be read"
		if pe := (*proto.Error)(nil); errors.As(err, &pe) {
			msg = pe.Message
		}
		return call, proto.Errorf(proto.CodeInvalidArgument, "endpoint call: %s", msg)
	}
	if !knownEndpoint(string(call.EndpointName)) {
		return call, proto.Errorf(proto.CodeInvalidArgument, "unknown endpointName %q", truncate(string(call.EndpointName), 64))
	}
	return call, nil
}

func knownEndpoint(name string) bool {
	for _, e := range proto.Endpoints {
		if string(e) == name {
			return true
		}
	}
	return false
}

// strictDecode decodes one JSON object into v, refusing null, other types
// and unknown fields, so that a typo in an argument name is an error rather
// than a silent default. Its errors are the client's: they name arguments
// as the client spells them, never Go's types and fields.
func strictDecode(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return errNotObject
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return decodeError(err)
	}
	return nil
}

// decodeError says what was wrong with a client's JSON arguments in the
// client's terms. encoding/json's own text ("json: cannot unmarshal string
// into Go struct field ChangesArgs.Cursor.since of type int64") names Go
// internals.
func decodeError(err error) *proto.Error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		// Field is the path from the top ("Cursor.since"), with Go's names
		// for embedded structs: the last element is the JSON name.
		field := typeErr.Field
		if i := strings.LastIndexByte(field, '.'); i >= 0 {
			field = field[i+1:]
		}
		if field == "" {
			return errNotObject
		}
		return proto.Errorf(proto.CodeInvalidArgument, "%s must be %s, not %s", truncate(field, 64), jsonKind(typeErr.Type), jsonValueKind(typeErr.Value))
	case errors.As(err, &syntaxErr):
		return proto.Errorf(proto.CodeInvalidArgument, "arguments are not valid JSON")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return proto.Errorf(proto.CodeInvalidArgument, "unknown argument %s", truncate(name, 64))
	}
	return proto.Errorf(proto.CodeInvalidArgument, "arguments could not be read: check their names and types")
}

// jsonKind is the JSON a Go type is decoded from, in words.
func jsonKind(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "a JSON value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "another JSON value"
}

// jsonValueKind is what encoding/json says it found ("string", "number
// -1", "object"), cut to its kind.
func jsonValueKind(v string) string {
	kind, rest, _ := strings.Cut(v, " ")
	switch kind {
	case "number":
		if rest != "" {
			return "the number " + truncate(rest, 32)
		}
		return "a number"
	case "string":
		return "a string"
	case "object":
		return "an object"
	case "array":
		return "an array"
	case "bool":
		return "true or false"
	}
	return "another JSON value"
}

// The quick decoders below read the one spelling of a call that clients
// send (socket.io-client's JSON.stringify: no spaces, the keys in order)
// without encoding/json's reflection and decoder allocations, which were
// about a tenth of the gateway's CPU in a reconnect storm. Anything else
// (spaces, escapes, other keys) takes the strict decoder, which decides.

const (
	quickCallPrefix = `{"endpointName":"`
	quickCallArgs   = `","endpointArgs":`
	quickRoomPrefix = `{"roomName":"`
	quickRoomSuffix = `"}`
)

// quickCall decodes {"endpointName":"N","endpointArgs":A}, where A is one
// JSON value (so no key may follow it).
func quickCall(raw []byte) (proto.EndpointCall, bool) {
	rest, ok := bytes.CutPrefix(raw, []byte(quickCallPrefix))
	if !ok {
		return proto.EndpointCall{}, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 || bytes.IndexByte(rest[:end], '\\') >= 0 {
		return proto.EndpointCall{}, false
	}
	name := rest[:end]
	args, ok := bytes.CutPrefix(rest[end:], []byte(quickCallArgs))
	if !ok || len(args) < 2 || args[len(args)-1] != '}' {
		return proto.EndpointCall{}, false
	}
	args = args[:len(args)-1]
	if !json.Valid(args) {
		return proto.EndpointCall{}, false
	}
	return proto.EndpointCall{EndpointName: proto.EndpointName(name), EndpointArgs: args}, true
}

// quickRoomArgs decodes {"roomName":"R"} where R needs no unescaping.
func quickRoomArgs(raw []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(raw, []byte(quickRoomPrefix))
	if !ok {
		return "", false
	}
	name, ok := bytes.CutSuffix(rest, []byte(quickRoomSuffix))
	if !ok {
		return "", false
	}
	for _, c := range name {
		if c == '"' || c == '\\' || c < 0x20 {
			return "", false
		}
	}
	return string(name), true
}

var errNotObject = proto.Errorf(proto.CodeInvalidArgument, "arguments must be a JSON object")

func invalid(err error) error {
	if _, ok := err.(*proto.Error); ok {
		return err
	}
	return proto.Errorf(proto.CodeInvalidArgument, "%v", err)
}

// decodeRoomArgs decodes {roomName} and parses the room.
func decodeRoomArgs(raw json.RawMessage) (proto.Room, error) {
	var a proto.RoomArgs
	if name, ok := quickRoomArgs(raw); ok {
		a.RoomName = name
	} else if err := strictDecode(raw, &a); err != nil {
		return proto.Room{}, invalid(err)
	}
	r, err := proto.ParseRoom(a.RoomName)
	if err != nil {
		return proto.Room{}, invalid(err)
	}
	return r, nil
}

func decodeUpdateClient(raw json.RawMessage) (bool, error) {
	var a proto.UpdateClientArgs
	if err := strictDecode(raw, &a); err != nil {
		return false, invalid(err)
	}
	if a.IsActive == nil {
		return false, proto.Errorf(proto.CodeInvalidArgument, "isActive (true or false) is required")
	}
	return *a.IsActive, nil
}

func decodeChangesArgs(raw json.RawMessage) (proto.ChangesArgs, proto.Room, error) {
	var a proto.ChangesArgs
	if err := strictDecode(raw, &a); err != nil {
		return a, proto.Room{}, invalid(err)
	}
	r, err := checkHistoryArgs(a.RoomName, a.Cursor, a.Limit)
	a.RoomName = r.Name()
	return a, r, err
}

func decodeChatArgs(raw json.RawMessage) (proto.ChatArgs, proto.Room, error) {
	var a proto.ChatArgs
	if err := strictDecode(raw, &a); err != nil {
		return a, proto.Room{}, invalid(err)
	}
	r, err := checkHistoryArgs(a.RoomName, a.Cursor, a.Limit)
	if err == nil && r.Kind() != proto.KindChat {
		err = proto.Errorf(proto.CodeInvalidArgument, "%s is not a chat room: use getChangesSince", r.Name())
	}
	a.RoomName = r.Name()
	return a, r, err
}

func checkHistoryArgs(name string, c proto.Cursor, limit int) (proto.Room, error) {
	r, err := proto.ParseRoom(name)
	if err != nil {
		return proto.Room{}, invalid(err)
	}
	if !r.Kind().Stored() {
		return proto.Room{}, proto.Errorf(proto.CodeInvalidArgument, "%s keeps no history", r.Name())
	}
	if err := c.Validate(); err != nil {
		return proto.Room{}, err
	}
	// How large a page may be is sync's to say (ROOMCAST_SYNC_MAX_LIMIT: a
	// larger limit is cut to it, and the answer's cursor continues); a
	// negative one is malformed, refused here as sync would.
	if limit < 0 {
		return proto.Room{}, proto.Errorf(proto.CodeInvalidArgument, "limit %d: want 1 or more, or none for sync's default", limit)
	}
	return r, nil
}

// serveEndpoint runs one call on the socket's reader goroutine: calls of one
// socket are answered in order, one at a time.
func (g *Gateway) serveEndpoint(s *socket, call proto.EndpointCall) proto.Ack {
	ctx := context.Background()
	var (
		data any
		err  error
	)
	switch call.EndpointName {
	case proto.EndpointAddToRoom:
		data, err = g.addToRoom(ctx, s, call.EndpointArgs)
	case proto.EndpointRemoveFromRoom:
		data, err = g.removeFromRoom(s, call.EndpointArgs)
	case proto.EndpointGetRoomState:
		data, err = g.getRoomState(ctx, s, call.EndpointArgs)
	case proto.EndpointUpdateClient:
		data, err = g.updateClient(s, call.EndpointArgs)
	case proto.EndpointGetChangesSince:
		data, err = g.getChangesSince(ctx, s, call.EndpointArgs)
	case proto.EndpointGetChatMessagesSince:
		data, err = g.getChatMessagesSince(ctx, s, call.EndpointArgs)
	default:
		err = proto.Errorf(proto.CodeInvalidArgument, "unknown endpointName %q", truncate(string(call.EndpointName), 64))
	}
	if err != nil {
		return proto.Fail(err)
	}
	return proto.OK(data)
}

// readState asks roomstate for r's state; nil when r was never broadcast to.
// The request goes out after the call (batched with other sockets' in one
// roomstate.getmany), so the state is at least as new as a subscription made
// before it.
func (g *Gateway) readState(ctx context.Context, r proto.Room) (*proto.RoomState, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	return g.states.read(ctx, r)
}

// readStates is readState of several rooms, in one batch.
func (g *Gateway) readStates(ctx context.Context, rooms ...proto.Room) ([]*proto.RoomState, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	return g.states.readMany(ctx, rooms...)
}

// fixedRooms is how many rooms every socket is in from the start (its user
// and client rooms); they do not count against MaxRoomsPerSocket.
const fixedRooms = 2

func (g *Gateway) addToRoom(ctx context.Context, s *socket, raw json.RawMessage) (any, error) {
	r, err := decodeRoomArgs(raw)
	if err != nil {
		return nil, err
	}
	if err := g.authorize(ctx, s, r); err != nil {
		return nil, err
	}
	parent := r.Parent().Key()
	if r.Kind() == proto.KindChat {
		s.setLeftChat(parent, false)
	}
	already := s.inRoom(parent)
	if !already && s.roomCount()-fixedRooms >= g.cfg.MaxRoomsPerSocket {
		return nil, proto.Errorf(proto.CodeInvalidArgument, "a socket may join at most %d rooms: leave one first", g.cfg.MaxRoomsPerSocket)
	}
	if !already {
		// The state request below goes out on the same connection after
		// the SUB (readState only ever sends a request made after it was
		// called), so the server has the subscription before we answer: a
		// message published after the ack reaches the socket.
		if _, err := g.join(s, r); err != nil {
			return nil, err
		}
	}
	rooms := []proto.Room{r}
	if s.sess != nil && r.Kind().Stored() {
		// With recovery, the rooms sharing r's list too, in the same
		// batch: where each stood is what a recovery never replays (a
		// first socket here: this gateway saw none of their messages).
		for _, f := range append([]proto.Room{r.Parent()}, r.Parent().Children()...) {
			if f.Name() != r.Name() {
				rooms = append(rooms, f)
			}
		}
	}
	sts, err := g.readStates(ctx, rooms...)
	if err != nil {
		if !already {
			g.leave(s, r)
		}
		return nil, err
	}
	st := sts[0]
	res := proto.AddToRoomResult{RoomName: r.Name()}
	if st != nil {
		res.LastBroadcastTimestamp, res.Seq = &st.LastBroadcastTimestamp, &st.Seq
	}
	if ss := s.sess; ss != nil {
		// The client holds the room up to here (and has no use for its
		// siblings' past): a recovery never replays what it read as state.
		for i, f := range rooms {
			if sts[i] != nil {
				ss.order.joined(sts[i].Seq, f.Name())
			}
		}
	}
	return res, nil
}

func (g *Gateway) removeFromRoom(s *socket, raw json.RawMessage) (any, error) {
	r, err := decodeRoomArgs(raw)
	if err != nil {
		return nil, err
	}
	if r.Kind() == proto.KindClient {
		return nil, proto.Errorf(proto.CodeForbidden, "client rooms are managed by the server")
	}
	// board-B-tasks shares board-B's list: leaving one leaves the three.
	if r.Kind() == proto.KindChat {
		s.setLeftChat(r.Name(), true) // its next message must not pull s back in
	}
	g.leave(s, r)
	return struct{}{}, nil
}

func (g *Gateway) getRoomState(ctx context.Context, s *socket, raw json.RawMessage) (any, error) {
	r, err := decodeRoomArgs(raw)
	if err != nil {
		return nil, err
	}
	if err := g.authorize(ctx, s, r); err != nil {
		return nil, err
	}
	return g.readState(ctx, r)
}

func (g *Gateway) updateClient(s *socket, raw json.RawMessage) (any, error) {
	active, err := decodeUpdateClient(raw)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	changed := !s.hasPresence || s.active != active
	s.active, s.hasPresence = active, true
	s.mu.Unlock()
	if changed {
		g.presence.markDirty(s.user)
	}
	return struct{}{}, nil
}

func (g *Gateway) getChangesSince(ctx context.Context, s *socket, raw json.RawMessage) (any, error) {
	args, r, err := decodeChangesArgs(raw)
	if err != nil {
		return nil, err
	}
	if err := g.authorize(ctx, s, r); err != nil {
		return nil, err
	}
	return g.forward(ctx, proto.SubjectSyncChanges, proto.HistoryRequest{ChangesArgs: args, UserID: s.user})
}

func (g *Gateway) getChatMessagesSince(ctx context.Context, s *socket, raw json.RawMessage) (any, error) {
	args, r, err := decodeChatArgs(raw)
	if err != nil {
		return nil, err
	}
	if err := g.authorize(ctx, s, r); err != nil {
		return nil, err
	}
	return g.forward(ctx, proto.SubjectSyncChat, proto.HistoryRequest{ChangesArgs: proto.ChangesArgs(args), UserID: s.user})
}

// forward passes a history read to sync, with the user who asks (sync
// shares its reads fairly between users), and its answer back unchanged.
func (g *Gateway) forward(ctx context.Context, subject string, args any) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	var res json.RawMessage
	if err := proto.Request(ctx, g.nc, subject, args, &res); err != nil {
		return nil, err
	}
	return res, nil
}
