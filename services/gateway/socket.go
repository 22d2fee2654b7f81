package gateway

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/sio"
)

// Socket states, in the only order they are passed through.
const (
	stateOpen      uint8 = iota // upgraded, waiting for CONNECT
	stateConnected              // authenticated, in its rooms
	stateClosing                // leaving: flushing its last frames
)

// socket is one Engine.IO/Socket.IO connection. While idle it costs this
// struct, its descriptor's place in the gateway's poller and one timer: no
// goroutine and no buffers (where there is no epoll, one reader goroutine,
// blocked in a read). Frames are written by whoever sends them,
// without blocking; a writer goroutine runs only while the kernel's buffer
// for the socket is full.
//
// Lock order: see locksordering.txt (socket.mu comes after the shard locks
// and before heartbeats.mu).
type socket struct {
	gw   *Gateway
	conn net.Conn
	raw  syscall.RawConn // conn's descriptor, for writes that must not block; nil: always write from a goroutine

	// id is set at creation; user and client are written once, under mu,
	// by connect while the state is stateOpen (so never once a close has
	// begun), before the socket is published to rooms and the user index.
	// Read-only from then: read them after taking mu, or on a socket found
	// in a room or the user index.
	id     string
	user   string
	client string

	// Under poller.mu (written by poller.add, read by poller.forget on
	// any goroutine): the registered descriptor and its generation.
	pollFD  int32
	pollGen uint32

	// Reader only (its goroutine, or the poller's one reader at a time, and
	// the deep worker it hands a message to while it waits).
	inbuf        []byte // a partial frame kept between reads (poller only)
	pendingToken string // from the upgrade request, until CONNECT
	// The socket's budget: every inbound frame takes a token (takeFrame).
	// float32: the two share the 8 bytes tokens alone took (a size class).
	tokens   float32
	excess   float32 // frames refused, drained at RateLimit: past RateBurst the socket is closed
	tokensAt int64   // when tokens was last topped up (mono)

	// Under mu. The small fields sit together: the struct is allocated per
	// socket, and padding between them cost a size class.
	mu          sync.Mutex
	state       uint8
	writing     bool // a writer is at work (writeNow inline, or flush): others only queue
	closeAfter  bool // set by a graceful or abort shutdown: the writer that finds the queue empty closes the conn (takeQueue)
	active      bool // updateClient {isActive}
	hasPresence bool // it has said updateClient at least once
	pingPending bool
	// After abort: the writer took its buffers after it (they end with the
	// close frame); the write it interrupted has been resumed.
	takenAborted bool
	resumed      bool
	queue        net.Buffers // frames waiting to be written, header included
	queued       int         // bytes in queue
	rooms        []string    // keys (Room.Key) of the (parent) rooms it is in
	leftChats    []string    // chats it left with removeFromRoom: not re-adopted
	// The heartbeat: the CONNECT deadline, then the next ping or the pong
	// deadline (due), or the token's expiry if that comes first, run by
	// the gateway's heartbeats (one timer for every socket).
	due     int64 // when the current heartbeat step is due (mono)
	expires int64 // the token's exp (Unix ns); zero before CONNECT
	// abortBy is when a socket closed by abort gives up writing its close
	// frame (Unix ns); zero: not aborted.
	abortBy int64

	// The socket's place in the gateway's heartbeats, under heartbeats.mu.
	hbAt  int64 // when heartbeats runs onHeartbeat (mono)
	hbIdx int32 // index in the heap; -1: none scheduled

	// Reader only, as tokens; here, where hbIdx leaves padding.
	limited bool // the frame being handled found no token (takeFrame)
}

func newSocket(gw *Gateway, conn net.Conn, raw syscall.RawConn, token string) *socket {
	return &socket{
		gw:           gw,
		conn:         conn,
		raw:          raw,
		id:           randomID(20),
		pendingToken: token,
		tokens:       float32(gw.cfg.RateBurst),
		tokensAt:     mono(),
		hbIdx:        -1,
	}
}

// logger is for per-socket events, at debug level: with thousands of
// sockets connecting at once (a reconnect storm), a line per connect at info
// costs more CPU than the connect itself, and a disabled level costs nothing.
func (s *socket) logger() *zerolog.Event {
	return s.gw.log.Debug().Str("socket", s.id).Str("user", s.user)
}

// wsFrame wraps payload in an unmasked WebSocket frame of opcode op, header
// and payload in one slice so that it can be queued (and shared) as is.
func wsFrame(op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	var hdr int
	switch {
	case n < 126:
		hdr = 2
	case n <= 0xffff:
		hdr = 4
	default:
		hdr = 10
	}
	b := make([]byte, hdr+n)
	b[0] = 0x80 | byte(op)
	switch hdr {
	case 2:
		b[1] = byte(n)
	case 4:
		b[1] = 126
		b[2], b[3] = byte(n>>8), byte(n)
	default:
		b[1] = 127
		for i := 0; i < 8; i++ {
			b[2+i] = byte(uint64(n) >> (56 - 8*i))
		}
	}
	copy(b[hdr:], payload)
	return b
}

func textFrame(payload []byte) []byte { return wsFrame(ws.OpText, payload) }

// Frames every socket may be sent; shared, never modified.
var (
	pingFrame           = textFrame(sio.PingPacket)
	disconnectFrame     = textFrame(sio.DisconnectPacket)
	goingAwayFrame      = wsFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, "server shutting down"))
	normalCloseFrm      = wsFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	floodCloseFrame     = closeFrame(ws.StatusPolicyViolation, "rate limit exceeded")
	noConnectCloseFrame = closeFrame(ws.StatusPolicyViolation, "no CONNECT in time")
	// The server failed a CONNECT (NATS did not take or confirm the
	// socket's subscriptions): the client may reconnect at once.
	setupCloseFrame = closeFrame(ws.StatusInternalServerError, "the server could not set up this socket: reconnect")
	// internalCloseFrame: handling one of the socket's packets panicked.
	internalCloseFrame = closeFrame(ws.StatusInternalServerError, "internal error: reconnect")
	slowCloseFrame     = closeFrame(statusTryAgainLater, "slow consumer: messages came faster than the connection took them; reconnect and resync")
)

// closeFrame is a WebSocket close frame with code and reason, the reason
// cut (at a character) to the 123 bytes a control frame leaves for it.
func closeFrame(code ws.StatusCode, reason string) []byte {
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	return wsFrame(ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

// statusTryAgainLater (1013, IANA's registry of close codes, not in
// gobwas/ws): the server casts a client off for a passing condition.
const statusTryAgainLater ws.StatusCode = 1013

// maxCloseReason is what is left of a control frame's 125 bytes after the
// close code.
const maxCloseReason = 123

// send queues one frame and writes it now, without blocking. It is the only
// way anything is written to the socket (pongs, pings and closes included),
// so writes never interleave. It returns false when the socket is closing or
// was just cut off because its queue overflowed.
func (s *socket) send(frame []byte) bool {
	ok, start := s.enqueue(frame)
	if start {
		s.writeNow()
	}
	return ok
}

// enqueue queues one frame without writing it. start reports that the
// caller became the socket's writer: it must call writeNow (soon: the fan-out
// first queues a batch of messages to every member, then writes, so that a
// socket's frames of one batch go out in one writev).
func (s *socket) enqueue(frame []byte) (ok, start bool) {
	s.mu.Lock()
	if s.state >= stateClosing {
		s.mu.Unlock()
		return false, false
	}
	if s.queued+len(frame) > s.gw.cfg.SendQueueBytes {
		queued := s.queued
		s.mu.Unlock()
		s.gw.m.slowDisconnects.Inc()
		s.gw.log.Warn().Str("socket", s.id).Str("user", s.user).Int("queued", queued).Msg("send queue overflow: disconnecting slow socket")
		s.abort("slow consumer", slowCloseFrame)
		return false, false
	}
	s.queue = append(s.queue, frame)
	s.queued += len(frame)
	if s.writing {
		// The writer at work takes this frame with its next writev.
		s.mu.Unlock()
		return true, false
	}
	s.writing = true
	s.mu.Unlock()
	return true, true
}

// inlineRounds bounds how many writevs writeNow makes for frames that other
// senders queue while it writes, before it leaves the rest to a goroutine.
const inlineRounds = 4

// writeNow writes the queue from the calling goroutine (a fan-out worker, the
// reader, a timer) without blocking: most writes fit in the kernel's buffer
// at once, and writing here costs one writev and no goroutine. Whatever
// would block (a full TCP buffer: a slow or stalled client) goes on in
// flush, on a goroutine of its own, with the write deadline. The caller has
// set s.writing.
func (s *socket) writeNow() {
	if s.raw == nil {
		go s.flush()
		return
	}
	for range inlineRounds {
		bufs, ok := s.takeQueue(false)
		if !ok {
			return
		}
		rest, err := writeNonblock(s.raw, bufs)
		if err != nil {
			if s.resumeAfterAbort(rest, err) {
				go s.flush()
				return
			}
			s.writeFailed(err)
			return
		}
		if len(rest) > 0 {
			// The kernel took part of it: queue the rest in front of what
			// came meanwhile, and wait for the socket in flush.
			s.mu.Lock()
			s.putBackLocked(rest)
			s.mu.Unlock()
			go s.flush()
			return
		}
	}
	go s.flush()
}

// takeQueue hands the writer everything queued; with nothing queued it ends
// the writer's turn (closing the connection if a close waited for the
// queue) and reports false. A writer that blocks (flush) has the write
// deadline set here, under mu, so that abort's deadline is not undone.
func (s *socket) takeQueue(blocking bool) (net.Buffers, bool) {
	s.mu.Lock()
	if len(s.queue) == 0 {
		s.writing = false
		closeNow := s.closeAfter
		s.mu.Unlock()
		if closeNow {
			_ = s.conn.Close()
		}
		return nil, false
	}
	bufs := s.queue
	s.queue, s.queued = nil, 0
	s.takenAborted = s.abortBy != 0
	if blocking {
		deadline := time.Now().Add(s.gw.cfg.WriteTimeout)
		if s.abortBy != 0 {
			deadline = time.Unix(0, s.abortBy)
		}
		_ = s.conn.SetWriteDeadline(deadline)
	}
	s.mu.Unlock()
	return bufs, true
}

// flush writes the queue until it is empty, coalescing every frame queued
// meanwhile into one writev, then exits. It may block (up to WriteTimeout
// per write), so it runs on a goroutine of its own.
func (s *socket) flush() {
	for {
		bufs, ok := s.takeQueue(true)
		if !ok {
			return
		}
		if _, err := bufs.WriteTo(s.conn); err != nil {
			if s.resumeAfterAbort(bufs, err) {
				continue
			}
			s.writeFailed(err)
			return
		}
	}
}

// putBackLocked puts what a writer did not write (rest) back in front of
// the queue. Of buffers taken before an abort only the frame the write was
// in, rest[0], goes back: the close frame comes right after it. Called
// with s.mu held.
func (s *socket) putBackLocked(rest net.Buffers) {
	if s.abortBy != 0 && !s.takenAborted && len(rest) > 1 {
		rest = rest[:1]
	}
	for _, b := range rest {
		s.queued += len(b)
	}
	s.queue = append(rest, s.queue...)
}

// resumeAfterAbort reports whether a failed write was one that abort
// interrupted (its deadline set to now) and the writer should go on, with
// what it had not written (rest) put back as putBackLocked does. Only once
// per socket, and only before abortBy.
func (s *socket) resumeAfterAbort(rest net.Buffers, err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.abortBy == 0 || s.resumed || time.Now().UnixNano() >= s.abortBy {
		return false
	}
	s.resumed = true
	s.putBackLocked(rest)
	return true
}

// writeFailed ends the writer and the socket after a failed write.
func (s *socket) writeFailed(err error) {
	s.mu.Lock()
	s.writing = false
	s.queue, s.queued = nil, 0
	s.mu.Unlock()
	s.close("write: " + err.Error())
	_ = s.conn.Close()
}

// How shutdown closes a socket.
const (
	closeDrop     = iota // close the connection now, writing nothing
	closeGraceful        // write what is queued, then the frames given
	closeAbort           // drop what is queued, write the close frame given
)

// abortGrace bounds how long abort may take to write its close frame.
const abortGrace = time.Second

// close disconnects the socket now: nothing queued is written.
func (s *socket) close(reason string) { s.shutdown(reason, closeDrop) }

// closeWith writes frames (e.g. a Socket.IO DISCONNECT and a WebSocket
// close) after what is already queued, then closes.
func (s *socket) closeWith(reason string, frames ...[]byte) {
	s.shutdown(reason, closeGraceful, frames...)
}

// abort closes the socket with a WebSocket close frame that does not wait
// behind its queue (a slow consumer's is full; a protocol error's need not
// be answered): what is queued and not begun is dropped, and the close frame
// goes out after at most the frame being written, within abortGrace. A
// writer blocked on a client that reads nothing is interrupted; one that
// cannot finish in time closes the connection without a close frame (the
// client could not have read it anyway).
func (s *socket) abort(reason string, frame []byte) { s.shutdown(reason, closeAbort, frame) }

func (s *socket) shutdown(reason string, how int, frames ...[]byte) {
	s.mu.Lock()
	if s.state >= stateClosing {
		s.mu.Unlock()
		return
	}
	s.state = stateClosing
	s.gw.hb.cancel(s)
	closeNow, write := true, false
	switch how {
	case closeGraceful:
		for _, f := range frames {
			s.queue = append(s.queue, f)
			s.queued += len(f)
		}
		if len(s.queue) > 0 {
			s.closeAfter = true
			closeNow = false
			if !s.writing {
				s.writing = true
				go s.flush()
			}
		}
	case closeAbort:
		closeNow = false
		s.closeAfter = true
		s.abortBy = time.Now().Add(abortGrace).UnixNano()
		if s.writing {
			// A writer is at work, perhaps in the frame at the queue's head
			// (the rest of a partial write): keep that one, drop the others,
			// and interrupt a write that waits for the client. The writer
			// resumes with the frame it was in (resumeAfterAbort).
			keep := s.queue[:min(len(s.queue), 1)]
			s.queue = append(keep[:len(keep):len(keep)], frames...)
			_ = s.conn.SetWriteDeadline(time.Now())
		} else {
			// Nothing is being written: the connection is between frames.
			s.queue = append(net.Buffers(nil), frames...)
			s.writing = true
			write = true
			_ = s.conn.SetWriteDeadline(time.Unix(0, s.abortBy))
		}
		s.queued = 0
		for _, f := range s.queue {
			s.queued += len(f)
		}
	default:
		s.queue, s.queued = nil, 0
	}
	s.mu.Unlock()
	if closeNow {
		_ = s.conn.Close()
	}
	if write {
		s.writeNow()
	}
	if s.gw.poller != nil {
		s.gw.poller.forget(s)
	}
	s.gw.forget(s)
	s.logger().Str("reason", reason).Msg("socket closed")
}

func (s *socket) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state >= stateClosing
}

// armLocked sets the heartbeat timer for a step due in d, or for the
// token's expiry if that comes first. Called with s.mu held.
func (s *socket) armLocked(d time.Duration) {
	now := mono()
	s.due = now + int64(d)
	if s.expires != 0 {
		if u := time.Duration(s.expires - time.Now().UnixNano()); u < d {
			d = max(u, 0)
		}
	}
	s.gw.hb.schedule(s, now+int64(d))
}

// onHeartbeat runs on the socket's timer: the CONNECT deadline before
// CONNECT, then alternately "send a ping" and "the pong is late", and the
// token's expiry, which closes the socket with a server DISCONNECT.
func (s *socket) onHeartbeat() {
	s.mu.Lock()
	now := mono()
	switch {
	case s.state == stateOpen:
		s.mu.Unlock()
		s.abort("no CONNECT in time", noConnectCloseFrame)
		return
	case s.state != stateConnected:
		s.mu.Unlock()
		return
	case s.expires != 0 && time.Now().UnixNano() >= s.expires:
		s.mu.Unlock()
		s.gw.m.authFailures.WithLabelValues("expired_while_connected").Inc()
		s.closeWith("token expired", disconnectFrame, normalCloseFrm)
		return
	case now < s.due:
		// Woken for an expiry that the wall clock says is not there yet.
		s.armLocked(time.Duration(s.due - now))
		s.mu.Unlock()
		return
	case s.pingPending:
		s.mu.Unlock()
		s.close("ping timeout")
		return
	}
	s.pingPending = true
	s.armLocked(s.gw.cfg.PingTimeout)
	s.mu.Unlock()
	s.send(pingFrame)
}

func (s *socket) onPong() {
	s.mu.Lock()
	if s.pingPending && s.state == stateConnected {
		s.pingPending = false
		s.armLocked(s.gw.cfg.PingInterval)
	}
	s.mu.Unlock()
}

// framePool holds read buffers; a socket holds one only while it reads a
// frame's payload, never while idle.
var framePool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// readLoop runs on the socket's own goroutine, started fresh after the
// upgrade so its stack is small while it waits.
func (s *socket) readLoop() {
	var hdrBuf [ws.MaxHeaderSize - 2]byte
	for {
		h, err := ws.ReadHeaderBuffer(s.conn, hdrBuf[:])
		if errors.Is(err, ws.ErrHeaderLengthMSB) {
			h.Length, err = lengthMSB, nil
		}
		if err != nil {
			s.close(readReason(err))
			return
		}
		if !s.checkHeader(h) {
			return
		}
		n := int(h.Length)
		bp := framePool.Get().(*[]byte)
		var buf []byte
		if n <= cap(*bp) {
			buf = (*bp)[:n]
		} else {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(s.conn, buf); err != nil {
			framePool.Put(bp)
			s.close(readReason(err))
			return
		}
		ws.Cipher(buf, h.Mask, 0)
		keep := s.handleFrame(h, buf)
		framePool.Put(bp)
		if !keep {
			return
		}
	}
}

// lengthMSB is the Length of a frame header whose 64-bit length has its top
// bit set, which RFC 6455 forbids.
const lengthMSB = -1

// checkHeader refuses (and closes on) a frame that breaks RFC 6455 or is
// bigger than MaxPayload, before its payload is read.
func (s *socket) checkHeader(h ws.Header) bool {
	control := h.OpCode&0x8 != 0
	switch {
	case h.Length == lengthMSB:
		return s.protocolError("length", ws.StatusProtocolError, "frame length with its top bit set")
	case h.Rsv != 0:
		// No extension is negotiated (permessage-deflate would use RSV1).
		return s.protocolError("rsv", ws.StatusProtocolError, "reserved bits set without an extension")
	case h.OpCode > ws.OpBinary && !control || h.OpCode > ws.OpPong:
		return s.protocolError("opcode", ws.StatusProtocolError, "reserved opcode")
	case control && h.Length > 125:
		return s.protocolError("control_too_large", ws.StatusProtocolError, "control frame over 125 bytes")
	case control && !h.Fin:
		return s.protocolError("fragmented", ws.StatusProtocolError, "fragmented control frame")
	case h.Length > int64(s.gw.cfg.MaxPayload):
		return s.protocolError("too_large", ws.StatusMessageTooBig, "frame too large")
	case !h.Masked:
		return s.protocolError("unmasked", ws.StatusProtocolError, "frames must be masked")
	}
	return true
}

// protocolError closes the socket for a frame or packet that breaks the
// protocol, with a close frame that tells the client why (reason is sent
// as is: it must say what the client did, in words it knows, never a Go
// error's text) and that does not wait behind what is queued. It counts the
// frame by kind and reports false: stop reading.
func (s *socket) protocolError(kind string, code ws.StatusCode, reason string) bool {
	s.gw.m.badFrames.WithLabelValues(kind).Inc()
	s.abort(reason, closeFrame(code, reason))
	return false
}

// checkClose reads a client's close frame body: no body, or a valid code
// and a UTF-8 reason. It closes with 1002 or 1007 and reports false
// otherwise.
func (s *socket) checkClose(body []byte) bool {
	switch {
	case len(body) == 0:
		return true
	case len(body) == 1:
		return s.protocolError("close", ws.StatusProtocolError, "close frame with a one-byte body")
	}
	code := ws.StatusCode(binary.BigEndian.Uint16(body))
	if !validCloseCode(code) {
		return s.protocolError("close", ws.StatusProtocolError, "invalid close code "+strconv.Itoa(int(code)))
	}
	if !utf8.Valid(body[2:]) {
		return s.protocolError("utf8", ws.StatusInvalidFramePayloadData, "close reason is not valid UTF-8")
	}
	return true
}

// validCloseCode reports whether an endpoint may send code: RFC 6455's
// defined codes but those that must not be sent (1005, 1006, 1015), the
// codes IANA registered since (1012-1014), and the ranges for libraries
// and applications (3000-4999).
func validCloseCode(code ws.StatusCode) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// sioReason is the text of one of sio's parse errors, for a close reason.
func sioReason(err error) string { return strings.TrimPrefix(err.Error(), "sio: ") }

func readReason(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return "connection closed"
	}
	return "read: " + err.Error()
}

// handleFrame handles one frame and reports whether to keep reading.
func (s *socket) handleFrame(h ws.Header, payload []byte) bool {
	if !h.Fin || h.OpCode == ws.OpContinuation {
		return s.protocolError("fragmented", ws.StatusUnsupportedData, "fragmented messages are not supported")
	}
	// Every frame but a close (which ends the socket anyway) counts against
	// the socket's budget: pings, pongs and noops cost a read and a
	// dispatch, and a ping a write. Over budget, a frame that asks for work
	// is dropped (an endpoint call is answered rate_limited); one that keeps
	// the session alive or ends it is still honored. A socket that keeps
	// sending after that is closed (docs/decisions.md, "Limits per socket").
	if h.OpCode != ws.OpClose {
		s.limited = !s.takeFrame()
		if s.limited {
			s.gw.m.limitedFrames.Inc()
			if s.excess > float32(s.gw.cfg.RateBurst) {
				s.gw.m.badFrames.WithLabelValues("flood").Inc()
				s.gw.log.Info().Str("socket", s.id).Str("user", s.user).Msg("closing a socket that kept sending beyond its rate limit")
				if s.user != "" {
					s.gw.cooldowns.start(s.user, s.gw.cfg.FloodCooldown)
				}
				s.closeWith("flood: kept sending beyond the rate limit", floodCloseFrame)
				return false
			}
		}
	}
	switch h.OpCode {
	case ws.OpText:
		return s.handleText(payload)
	case ws.OpPing:
		if !s.limited {
			s.send(wsFrame(ws.OpPong, payload))
		}
		return true
	case ws.OpPong:
		return true
	case ws.OpClose:
		if s.checkClose(payload) {
			s.closeWith("client closed the WebSocket", normalCloseFrm)
		}
		return false
	default: // binary; reserved opcodes were refused by checkHeader
		return s.protocolError("binary", ws.StatusUnsupportedData, "binary frames are not supported")
	}
}

func (s *socket) handleText(payload []byte) bool {
	if !utf8.Valid(payload) {
		return s.protocolError("utf8", ws.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
	}
	p, err := sio.ParsePacket(payload)
	if err != nil {
		return s.protocolError("malformed", ws.StatusProtocolError, "malformed packet: "+sioReason(err))
	}
	switch p.Engine {
	case sio.EnginePong:
		s.onPong()
		return true
	case sio.EngineNoop:
		return true
	case sio.EngineClose:
		s.closeWith("client closed the Engine.IO session", normalCloseFrm)
		return false
	case sio.EngineMessage:
		// CONNECT and endpoint calls (JWT, JSON, NATS requests) would grow
		// this goroutine's stack to 8 KB or more, kept until a GC shrinks
		// it: they run on a deep worker while the reader waits.
		return s.gw.deep.run(func() (keep bool) {
			// A panic in a CONNECT or a call may leave the socket half
			// changed: it is closed (1011; the client reconnects), and the
			// gateway serves on.
			defer s.gw.guard.Recover("endpoint", func() { s.abort("internal error", internalCloseFrame) })
			s.gw.hook("endpoint")
			return s.handleMessage(p)
		})
	}
	// A client ping (heartbeats go server → client in v4), open or upgrade.
	if p.Engine == sio.EnginePing {
		return s.protocolError("unexpected", ws.StatusProtocolError, "Engine.IO ping from a client: in v4 the server pings and the client answers")
	}
	return s.protocolError("unexpected", ws.StatusProtocolError, "unexpected Engine.IO packet type "+string(p.Engine))
}

func (s *socket) handleMessage(p sio.Packet) bool {
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	if s.limited && p.Type != sio.Event && p.Type != sio.Disconnect {
		// Over budget: a CONNECT waits for a retry (or the CONNECT
		// deadline), a stray ack changes nothing anyway.
		return true
	}
	if state == stateOpen {
		if p.Type != sio.Connect {
			return s.protocolError("not_connect", ws.StatusProtocolError, "the first packet must be a CONNECT")
		}
		if p.Namespace != "/" {
			s.send(textFrame(sio.AppendNamespaceError(nil, p.Namespace)))
			return true
		}
		return s.gw.connect(s, p.Data)
	}
	if p.Namespace != "/" {
		return s.protocolError("namespace", ws.StatusProtocolError, "a packet for a namespace other than /")
	}
	switch p.Type {
	case sio.Event:
		return s.handleEvent(p)
	case sio.Disconnect:
		s.closeWith("client disconnected", normalCloseFrm)
		return false
	case sio.Connect:
		return s.protocolError("second_connect", ws.StatusProtocolError, "a second CONNECT: this socket is connected already")
	case sio.Ack:
		// The gateway never asks for acks; a stray one changes nothing.
		return true
	}
	return s.protocolError("unexpected", ws.StatusProtocolError, "unexpected Socket.IO packet type "+string(p.Type))
}

func (s *socket) handleEvent(p sio.Packet) bool {
	name, args, err := sio.ParseEvent(p.Data)
	if err != nil {
		// As the reference server does with `42{}`: the peer is broken.
		return s.protocolError("malformed", ws.StatusProtocolError, "malformed EVENT: "+sioReason(err))
	}
	var ack proto.Ack
	endpoint := "unknown"
	var (
		call    proto.EndpointCall
		callErr error
	)
	userOK, userWait := true, time.Duration(0)
	if name == proto.IncomingEvent && !s.limited {
		// Every call, well-formed or not, takes a token of the user's.
		userOK, userWait = s.gw.allowUserCall(s)
	}
	if name == proto.IncomingEvent {
		call, callErr = decodeCall(args)
		if callErr == nil {
			endpoint = string(call.EndpointName)
		}
	}
	switch {
	case s.limited:
		// Its frame found no token (handleFrame): well-formed or not, a
		// flood of calls is a flood.
		ack = proto.Fail(proto.RateLimited(s.retryAfter(), "more than %g packets per second on this socket: back off and retry", s.gw.cfg.RateLimit))
	case name != proto.IncomingEvent:
		ack = proto.Fail(proto.Errorf(proto.CodeInvalidArgument, "unknown event %q: emit %q", truncate(name, 64), proto.IncomingEvent))
	case !userOK:
		ack = proto.Fail(proto.RateLimited(userWait, "more than %g endpoint calls per second from this user's sockets: back off and retry", s.gw.cfg.UserRateLimit))
	case callErr != nil:
		ack = proto.Fail(callErr)
	default:
		ack = s.gw.serveEndpoint(s, call)
	}
	code := "ok"
	if !ack.OK {
		code = string(ack.Error.Code)
	}
	if !knownEndpoint(endpoint) {
		endpoint = "unknown"
	}
	s.gw.m.calls.WithLabelValues(endpoint, code).Inc()
	if p.ID == sio.NoAck {
		s.logger().Str("endpoint", endpoint).Str("code", code).Msg("endpoint call without ack id: nothing answered")
		return true
	}
	body, err := ack.AppendJSON(nil)
	if err != nil {
		body, _ = proto.Fail(err).AppendJSON(nil)
	}
	s.send(textFrame(sio.AppendAck(nil, p.ID, body)))
	return true
}

// takeFrame takes one token from the socket's bucket (RateLimit per
// second, up to RateBurst) for an inbound frame. With none left it counts
// the frame as excess and reports false. Excess drains at the same rate as
// the tokens come back, so it only grows while the socket sends faster than
// twice RateLimit: a client that retries each refusal at once is slowed
// down, one that ignores refusals altogether is closed.
func (s *socket) takeFrame() bool {
	now := mono()
	refill := float32(time.Duration(now-s.tokensAt).Seconds() * s.gw.cfg.RateLimit)
	s.tokensAt = now
	s.tokens = min(s.tokens+refill, float32(s.gw.cfg.RateBurst))
	s.excess = max(s.excess-refill, 0)
	if s.tokens < 1 {
		s.excess++
		return false
	}
	s.tokens--
	return true
}

// retryAfter is how long until the socket's bucket has a token again.
func (s *socket) retryAfter() time.Duration {
	return time.Duration(float64(1-s.tokens) / s.gw.cfg.RateLimit * float64(time.Second))
}

// addRoom records that s is in the (parent) room; false if s is closing, in
// which case the caller takes it out of the room again.
func (s *socket) addRoom(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state >= stateClosing {
		return false
	}
	for _, r := range s.rooms {
		if r == name {
			return true
		}
	}
	if s.rooms == nil {
		// Its own two rooms and the few a page joins (an org, a board, a
		// chat) without growing the slice three times.
		s.rooms = make([]string, 0, fixedRooms+3)
	}
	s.rooms = append(s.rooms, name)
	return true
}

func (s *socket) dropRoom(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.rooms {
		if r == name {
			s.rooms[i] = s.rooms[len(s.rooms)-1]
			s.rooms = s.rooms[:len(s.rooms)-1]
			return
		}
	}
}

func (s *socket) inRoom(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rooms {
		if r == name {
			return true
		}
	}
	return false
}

// setLeftChat records that s left (true) or joined (false) chat name.
func (s *socket) setLeftChat(name string, left bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, c := range s.leftChats {
		if c == name {
			if !left {
				s.leftChats = append(s.leftChats[:i], s.leftChats[i+1:]...)
			}
			return
		}
	}
	if left {
		s.leftChats = append(s.leftChats, name)
	}
}

func (s *socket) leftChat(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.leftChats {
		if c == name {
			return true
		}
	}
	return false
}

func (s *socket) roomCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.rooms)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
