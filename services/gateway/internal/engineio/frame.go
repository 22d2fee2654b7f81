package engineio

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Status is a WebSocket close code.
type Status = ws.StatusCode

// The close codes the gateway sends.
const (
	StatusNormal          Status = ws.StatusNormalClosure
	StatusGoingAway       Status = ws.StatusGoingAway
	StatusProtocolError   Status = ws.StatusProtocolError
	StatusUnsupportedData Status = ws.StatusUnsupportedData
	StatusInvalidPayload  Status = ws.StatusInvalidFramePayloadData
	StatusPolicyViolation Status = ws.StatusPolicyViolation
	StatusMessageTooBig   Status = ws.StatusMessageTooBig
	StatusInternalError   Status = ws.StatusInternalServerError
	// StatusTryAgainLater (1013, IANA's registry of close codes, not in
	// gobwas/ws): the server casts a client off for a passing condition.
	StatusTryAgainLater Status = 1013
)

// wsFrame wraps payload in an unmasked WebSocket frame of opcode op, header
// and payload in one slice so that it can be queued (and shared) as is.
func wsFrame(op ws.OpCode, payload []byte) []byte {
	b := make([]byte, MaxHeader, MaxHeader+len(payload))
	return seal(op, append(b, payload...))
}

// TextFrame is the frame of one Engine.IO packet.
func TextFrame(packet []byte) []byte { return wsFrame(ws.OpText, packet) }

// MaxHeader is the room a frame built in place leaves in front of its
// packet for the header (Seal).
const MaxHeader = 10

// Seal makes the frame of the packet in b[MaxHeader:], in place: the
// header goes in front of the packet, and the frame is b's tail. Built
// so, a broadcast costs one allocation.
func Seal(b []byte) []byte { return seal(ws.OpText, b) }

func seal(op ws.OpCode, b []byte) []byte {
	n := len(b) - MaxHeader
	var hdr [MaxHeader]byte
	var h int
	switch {
	case n < 126:
		hdr[1], h = byte(n), 2
	case n <= 0xffff:
		hdr[1], hdr[2], hdr[3], h = 126, byte(n>>8), byte(n), 4
	default:
		hdr[1], h = 127, 10
		for i := 0; i < 8; i++ {
			hdr[2+i] = byte(uint64(n) >> (56 - 8*i))
		}
	}
	hdr[0] = 0x80 | byte(op)
	start := MaxHeader - h
	copy(b[start:], hdr[:h])
	return b[start:]
}

// Payload is what frame carries (an Engine.IO packet, or a close frame's
// body), without its header.
func Payload(frame []byte) []byte {
	h, n, ok := parseHeader(frame)
	if !ok || int64(len(frame)-n) < h.Length {
		return nil
	}
	return frame[n:]
}

// IsClose reports whether frame is a WebSocket close frame.
func IsClose(frame []byte) bool { return len(frame) > 0 && ws.OpCode(frame[0]&0x0f) == ws.OpClose }

// CloseFrame is a WebSocket close frame with code and reason, the reason
// cut (at a character) to the 123 bytes a control frame leaves for it.
func CloseFrame(code Status, reason string) []byte {
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	return wsFrame(ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

// maxCloseReason is what is left of a control frame's 125 bytes after the
// close code.
const maxCloseReason = 123

// NormalClose is the close frame of a session that ended normally.
var NormalClose = CloseFrame(StatusNormal, "")

// parseHeader reads a WebSocket frame header from b; ok is false while b
// does not hold all of it.
func parseHeader(b []byte) (h ws.Header, n int, ok bool) {
	if len(b) < 2 {
		return h, 0, false
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] >> 4) & 0x7
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, false
		}
		h.Length, n = int64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return h, 0, false
		}
		u := binary.BigEndian.Uint64(b[2:])
		switch {
		case u >= 1<<63:
			u = 0 // RFC 6455 wants the top bit clear: lengthMSB tells
			h.Length = lengthMSB
		case u > 1<<62:
			u = 1 << 62 // far past any MaxPayload: refused as too large
		}
		if h.Length != lengthMSB {
			h.Length = int64(u)
		}
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, false
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, true
}
