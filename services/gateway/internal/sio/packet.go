// Package sio parses and encodes the two protocols a browser speaks to the
// gateway over one WebSocket text frame: Engine.IO v4 packets (open, ping,
// pong, message, close) and, inside a message, Socket.IO v5 packets
// (CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR). It knows nothing about
// sockets or rooms; it turns bytes from outside into checked values and back.
//
// Only the WebSocket transport is spoken, so there is no payload framing
// (record separators) and no binary attachments: a binary packet is refused.
package sio

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// Engine.IO v4 packet types, the first byte of every text frame.
const (
	EngineOpen    byte = '0'
	EngineClose   byte = '1'
	EnginePing    byte = '2'
	EnginePong    byte = '3'
	EngineMessage byte = '4'
	EngineUpgrade byte = '5'
	EngineNoop    byte = '6'
)

// Socket.IO v5 packet types, the byte after an Engine.IO message's '4'.
const (
	Connect      byte = '0'
	Disconnect   byte = '1'
	Event        byte = '2'
	Ack          byte = '3'
	ConnectError byte = '4'
	BinaryEvent  byte = '5'
	BinaryAck    byte = '6'
)

// NoAck is Packet.ID when the packet carries no ack id.
const NoAck int64 = -1

// maxAckDigits bounds an ack id: socket.io-client counts from 0 per
// connection, so 15 digits (below 2^53, exact in JavaScript) are plenty.
const maxAckDigits = 15

// maxNamespaceLen bounds a namespace; roomcast serves only "/".
const maxNamespaceLen = 128

// Packet is one parsed text frame. For Engine.IO packets other than a message
// only Engine is set. Data aliases the frame: copy it to keep it past the
// frame's buffer.
type Packet struct {
	Engine    byte   // EngineOpen … EngineNoop
	Type      byte   // Socket.IO type, when Engine is EngineMessage
	Namespace string // "/" unless the packet names another
	ID        int64  // ack id, NoAck when absent
	Data      []byte // JSON payload, possibly empty
}

// Errors of ParsePacket. Each one closes the socket that sent it.
var (
	ErrEmpty       = errors.New("sio: empty frame")
	ErrEngineType  = errors.New("sio: unknown Engine.IO packet type")
	ErrType        = errors.New("sio: unknown Socket.IO packet type")
	ErrBinary      = errors.New("sio: binary packets are not supported")
	ErrAckID       = errors.New("sio: ack id is not a number roomcast accepts")
	ErrNamespace   = errors.New("sio: namespace is malformed")
	ErrPayloadJSON = errors.New("sio: payload is not valid JSON")
)

// ParsePacket parses one WebSocket text frame. It checks the framing and that
// a Socket.IO payload, when present, is valid JSON; what the JSON must hold
// is up to the caller (see ParseEvent).
func ParsePacket(frame []byte) (Packet, error) {
	p := Packet{Namespace: "/", ID: NoAck}
	if len(frame) == 0 {
		return p, ErrEmpty
	}
	p.Engine = frame[0]
	switch p.Engine {
	case EngineOpen, EngineClose, EnginePing, EnginePong, EngineUpgrade, EngineNoop:
		// Engine.IO packets may carry a probe string ("2probe"); nothing
		// roomcast uses, so it is ignored.
		return p, nil
	case EngineMessage:
	default:
		return p, ErrEngineType
	}
	rest := frame[1:]
	if len(rest) == 0 {
		return p, ErrType
	}
	p.Type = rest[0]
	rest = rest[1:]
	switch p.Type {
	case Connect, Disconnect, Event, Ack, ConnectError:
	case BinaryEvent, BinaryAck:
		return p, ErrBinary
	default:
		return p, ErrType
	}
	// Namespace: "/name," when it starts with '/'.
	if len(rest) > 0 && rest[0] == '/' {
		i := bytes.IndexByte(rest, ',')
		if i < 0 {
			// A namespace with nothing after it ("41/chat").
			i = len(rest)
		}
		if i > maxNamespaceLen {
			return p, ErrNamespace
		}
		p.Namespace = string(rest[:i])
		if i < len(rest) {
			i++ // the comma
		}
		rest = rest[i:]
	}
	// Ack id: the digits before the payload.
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n > 0 {
		if n > maxAckDigits || p.Type == Connect || p.Type == Disconnect || p.Type == ConnectError {
			return p, ErrAckID
		}
		id, err := strconv.ParseInt(string(rest[:n]), 10, 64)
		if err != nil {
			return p, ErrAckID
		}
		p.ID = id
		rest = rest[n:]
	}
	if len(rest) > 0 && !json.Valid(rest) {
		return p, ErrPayloadJSON
	}
	p.Data = rest
	return p, nil
}

// ParseEvent splits an EVENT payload, a JSON array whose first element is the
// event name, into that name and the remaining arguments.
func ParseEvent(data []byte) (string, []json.RawMessage, error) {
	if name, args, ok := quickEvent(data); ok {
		return name, args, nil
	}
	return parseEventStrict(data)
}

// quickEvent reads the spelling socket.io-client sends, ["name",arg] or
// ["name"] with no spaces and a name that needs no unescaping, without
// encoding/json's reflection (an EVENT decoded into a slice of raw messages
// was ~7 % of the gateway's CPU in a reconnect storm). The argument must be
// one valid JSON value: "a},{b" is not, and takes the strict path.
func quickEvent(data []byte) (string, []json.RawMessage, bool) {
	rest, ok := bytes.CutPrefix(data, []byte(`["`))
	if !ok {
		return "", nil, false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", nil, false
	}
	for _, c := range rest[:end] {
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			return "", nil, false
		}
	}
	name, rest := string(rest[:end]), rest[end+1:]
	if string(rest) == "]" {
		return name, nil, true
	}
	arg, ok := bytes.CutPrefix(rest, []byte(","))
	if !ok {
		return "", nil, false
	}
	arg, ok = bytes.CutSuffix(arg, []byte("]"))
	// Space around the value would be kept in it here, not by the strict
	// decoder.
	if !ok || len(arg) == 0 || isSpace(arg[0]) || isSpace(arg[len(arg)-1]) || !json.Valid(arg) {
		return "", nil, false
	}
	return name, []json.RawMessage{arg}, true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func parseEventStrict(data []byte) (string, []json.RawMessage, error) {
	var arr []json.RawMessage
	if err := json.Unmarshal(data, &arr); err != nil {
		// Not wrapped: encoding/json's text names Go types, and the
		// client is told this reason.
		return "", nil, errors.New("sio: event payload must be a JSON array")
	}
	if len(arr) == 0 {
		return "", nil, errors.New("sio: event payload is an empty array")
	}
	var name string
	if len(arr[0]) == 0 || arr[0][0] != '"' || json.Unmarshal(arr[0], &name) != nil {
		return "", nil, errors.New("sio: event name must be a string")
	}
	return name, arr[1:], nil
}

// ConnectAuth is the auth object of a CONNECT packet, as socket.io-client
// sends it from its auth option.
type ConnectAuth struct {
	Token    string `json:"token"`
	ClientID string `json:"clientId"`
	// PID and Offset: socket.io-client (4.6 and later) coming back after a
	// cut asks for its session's recovery: the pid the server gave it and
	// the offset of the last event it got (absent if none).
	PID    string `json:"pid"`
	Offset string `json:"offset"`
}

// ParseConnectAuth decodes a CONNECT payload: empty (no auth) or a JSON
// object. Fields other than token, clientId, pid and offset are ignored.
func ParseConnectAuth(data []byte) (ConnectAuth, error) {
	var a ConnectAuth
	if len(bytes.TrimSpace(data)) == 0 {
		return a, nil
	}
	if err := json.Unmarshal(data, &a); err != nil {
		return ConnectAuth{}, errors.New("sio: CONNECT auth must be a JSON object with string token, clientId, pid and offset")
	}
	return a, nil
}
