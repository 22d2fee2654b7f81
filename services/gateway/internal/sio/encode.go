package sio

import (
	"encoding/json"
	"strconv"
)

// OpenPayload is the Engine.IO handshake, the first packet a server sends.
type OpenPayload struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int64    `json:"pingInterval"` // ms
	PingTimeout  int64    `json:"pingTimeout"`  // ms
	MaxPayload   int64    `json:"maxPayload"`   // bytes
}

// AppendOpen appends the Engine.IO open packet `0{…}`.
func AppendOpen(dst []byte, o OpenPayload) []byte {
	if o.Upgrades == nil {
		o.Upgrades = []string{}
	}
	b, _ := json.Marshal(o) // a struct of strings and numbers always marshals
	dst = append(dst, EngineOpen)
	return append(dst, b...)
}

// AppendConnectOK appends `40{"sid":…}`, the answer to an accepted CONNECT,
// or `40{"sid":…,"pid":…}` with a pid: the session can be recovered
// (connection state recovery), and events carry offsets.
func AppendConnectOK(dst []byte, sid, pid string) []byte {
	dst = append(dst, EngineMessage, Connect)
	dst = append(dst, `{"sid":`...)
	dst = strconv.AppendQuote(dst, sid)
	if pid != "" {
		dst = append(dst, `,"pid":`...)
		dst = strconv.AppendQuote(dst, pid)
	}
	return append(dst, '}')
}

// connectError is the payload of a CONNECT_ERROR, as the reference server
// sends it: the client's connect_error handler gets message and data.
type connectError struct {
	Message string           `json:"message"`
	Data    connectErrorData `json:"data"`
}

type connectErrorData struct {
	Code int `json:"code"`
}

// AppendConnectError appends `44{"message":…,"data":{"code":…}}`.
func AppendConnectError(dst []byte, message string, code int) []byte {
	b, _ := json.Marshal(connectError{Message: message, Data: connectErrorData{Code: code}})
	dst = append(dst, EngineMessage, ConnectError)
	return append(dst, b...)
}

// AppendNamespaceError appends the refusal of a CONNECT to a namespace the
// server does not serve: `44/nsp,{"message":"Invalid namespace"}`.
func AppendNamespaceError(dst []byte, nsp string) []byte {
	dst = append(dst, EngineMessage, ConnectError)
	dst = append(dst, nsp...)
	return append(dst, `,{"message":"Invalid namespace"}`...)
}

// AppendAck appends `43<id>[<arg>]`; arg must be valid JSON.
func AppendAck(dst []byte, id int64, arg []byte) []byte {
	dst = append(dst, EngineMessage, Ack)
	dst = strconv.AppendInt(dst, id, 10)
	dst = append(dst, '[')
	dst = append(dst, arg...)
	return append(dst, ']')
}

// AppendEventPrefix appends `42["<event>",`; the caller appends the argument
// and a closing ']'. Event names are roomcast's own constants, so they need
// no escaping beyond strconv's quoting.
func AppendEventPrefix(dst []byte, event string) []byte {
	dst = append(dst, EngineMessage, Event, '[')
	dst = strconv.AppendQuote(dst, event)
	return append(dst, ',')
}

// Fixed packets.
var (
	PingPacket       = []byte{EnginePing}
	DisconnectPacket = []byte{EngineMessage, Disconnect}
)
