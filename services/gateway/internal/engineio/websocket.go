package engineio

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// Transport is what a session needs of its connection to the client:
// queue a frame, write what is queued, close. The WebSocket implements it;
// a transport that keeps encoded frames until a request takes them
// (long-polling) fits the same three calls.
type Transport interface {
	// Queue queues one frame without writing it. ok is false when the
	// transport is closing, or was just cut off because its queue would
	// pass its bound (the Handler heard of it: Overflow). start reports
	// that the caller became the writer: it must call Write (soon: the
	// fan-out first queues a batch to every member, then writes, so that
	// a socket's frames of one batch go out together).
	Queue(frame []byte) (ok, start bool)
	// QueueOrdered queues m (compressed for a transport that negotiated
	// it) as Queue does, telling o (when not nil) under the same lock that
	// takes the frame's place in the queue, whether or not it is queued:
	// the order o hears of messages is the order they are sent in.
	QueueOrdered(m *Message, o Orderer) (ok, start bool)
	// Write writes what is queued without blocking; only the caller that
	// Queue made the writer calls it.
	Write()
	// Close ends the transport (once; later calls do nothing): how says
	// what becomes of the queue and of frames (the last ones, a close
	// frame among them).
	Close(how CloseMode, frames ...[]byte)
}

// Orderer hears of each numbered message a transport queues (or refuses,
// closing or full), in queue order, under the transport's lock: it must
// not block, nor call the transport.
type Orderer interface{ Queued(m *Message) }

// CloseMode is how Close closes.
type CloseMode uint8

const (
	CloseDrop     CloseMode = iota // close the connection now, writing nothing
	CloseGraceful                  // write what is queued, then the frames given
	// CloseAbort drops what is queued and not begun and writes the frames
	// given (a close frame) after at most the frame being written, within
	// AbortGrace: a slow consumer's queue is full, a protocol error's need
	// not be answered. A writer blocked on a client that reads nothing is
	// interrupted; one that cannot finish in time closes the connection
	// without a close frame (the client could not have read it anyway).
	CloseAbort
)

// AbortGrace bounds how long CloseAbort may take to write its frames.
const AbortGrace = time.Second

// Handler is the session above a transport, called back by it.
type Handler interface {
	// Admit is asked for each inbound frame but a close, before it is
	// handled: the session's budget. limited: handle it as over budget
	// (a WebSocket ping gets no pong); ok false: the session was closed,
	// stop reading.
	Admit() (limited, ok bool)
	// Packet handles one Engine.IO packet, limited as Admit said; false:
	// stop reading.
	Packet(p []byte, limited bool) bool
	// End ends the session for reason (a read or write failed, the
	// client closed, or broke the protocol): the session closes its
	// transport with how and frames.
	End(reason string, how CloseMode, frames ...[]byte)
	// BadFrame counts a frame refused, by kind, before End.
	BadFrame(kind string)
	// Overflow says the send queue would pass its bound (queued bytes
	// waiting): the session is cut off (End is not called for it).
	Overflow(queued int)
	// Upgraded says a polling session moved to its WebSocket: the
	// session's transport is the WebSocket from now on (the Polling
	// passes on what is still queued to it).
	Upgraded()
}

// Options are a gateway's settings for its WebSocket transports, shared.
type Options struct {
	MaxPayload     int           // the largest frame read
	SendQueueBytes int           // the bound of a socket's send queue
	WriteTimeout   time.Duration // a blocked write's limit
	TCPSendBuffer  int           // SO_SNDBUF; 0: the kernel's
	Poller         *Poller       // nil: a reader goroutine per socket
}

// WebSocket is one session's WebSocket connection. While idle it costs
// this struct (kept inside the session's, no allocation of its own), its
// descriptor's place in the poller: no goroutine and no buffers (without
// a poller, one reader goroutine, blocked in a read). Frames are written by
// whoever queues them, without blocking; a writer goroutine runs only while
// the kernel's buffer for the socket is full.
//
// Lock order: mu is a leaf (locksordering.txt); the Handler is called with
// no lock held.
type WebSocket struct {
	conn net.Conn
	raw  syscall.RawConn // conn's descriptor, for writes that must not block; nil: always write from a goroutine
	h    Handler
	opts *Options

	// Reader only (its goroutine, or the poller's one reader at a time).
	inbuf *[]byte // a partial frame kept between reads (poller only)

	mu sync.Mutex
	// Under Poller.mu (written by Poller.add, read by Poller.forget on
	// any goroutine): the registered descriptor (its generation is in the
	// poller's entry alone).
	pollFD int32
	// Under mu. The small fields sit together: the struct is inside every
	// session's, and padding between them cost a size class.
	queued     int32 // bytes in queue
	closing    bool  // Close was called: nothing more is queued
	writing    bool  // a writer is at work (Write inline, or flush): others only queue
	closeAfter bool  // set by a graceful or abort Close: the writer that finds the queue empty closes the conn (takeQueue)
	// After an abort: the writer took its buffers after it (they end with
	// the close frame); the write it interrupted has been resumed.
	takenAborted bool
	resumed      bool
	// Set by Init, read-only after: the client negotiated
	// permessage-deflate (its compressed frames are inflated; Message
	// sends it compressed broadcasts).
	deflate bool
	queue   net.Buffers // frames waiting to be written, header included
	// abortBy is when an aborted transport gives up writing its close
	// frame (Unix ns); zero: not aborted.
	abortBy int64
}

var _ Transport = (*WebSocket)(nil)

// Init sets w up on an upgraded connection, for h, and sends the open
// packet unless it went out with the 101. It reads nothing yet (Read).
func (w *WebSocket) Init(u Upgraded, h Handler, opts *Options) {
	conn := u.Conn
	w.raw = rawConnOf(conn)
	if tc, ok := conn.(*net.TCPConn); ok && opts.TCPSendBuffer > 0 {
		_ = tc.SetWriteBuffer(opts.TCPSendBuffer)
	}
	if len(u.Extra) > 0 {
		conn = &bufferedConn{Conn: conn, extra: u.Extra}
	}
	w.conn, w.h, w.opts = conn, h, opts
	w.deflate = u.Deflate
	if !u.Opened && u.Open != nil {
		if ok, start := w.Queue(u.Open); ok && start {
			w.Write()
		}
	}
}

// Read starts reading: the poller's, or a reader goroutine of w's own.
func (w *WebSocket) Read() {
	if _, buffered := w.conn.(*bufferedConn); !buffered && w.opts.Poller != nil && w.opts.Poller.add(w) {
		return // the poller reads it from now on
	}
	// A fresh goroutine: the upgrade's stack has grown, and an idle
	// socket should hold only a small one.
	go w.readLoop()
}

// Queue: see Transport.
func (w *WebSocket) Queue(frame []byte) (ok, start bool) { return w.queue1(frame, nil, nil) }

// QueueOrdered is Transport's.
func (w *WebSocket) QueueOrdered(m *Message, o Orderer) (ok, start bool) {
	return w.queue1(m.For(w), m, o)
}

// queue1 queues frame, telling o of m first (when o is not nil).
func (w *WebSocket) queue1(frame []byte, m *Message, o Orderer) (ok, start bool) {
	w.mu.Lock()
	if o != nil {
		o.Queued(m)
	}
	if w.closing {
		w.mu.Unlock()
		return false, false
	}
	if int(w.queued)+len(frame) > w.opts.SendQueueBytes {
		queued := w.queued
		w.mu.Unlock()
		w.h.Overflow(int(queued))
		return false, false
	}
	w.queue = append(w.queue, frame)
	w.queued += int32(len(frame))
	if w.writing {
		// The writer at work takes this frame with its next writev.
		w.mu.Unlock()
		return true, false
	}
	w.writing = true
	w.mu.Unlock()
	return true, true
}

// inlineRounds bounds how many writevs Write makes for frames that other
// senders queue while it writes, before it leaves the rest to a goroutine.
const inlineRounds = 4

// Write writes the queue from the calling goroutine (a fan-out worker, the
// reader, a timer) without blocking: most writes fit in the kernel's buffer
// at once, and writing here costs one writev and no goroutine. Whatever
// would block (a full TCP buffer: a slow or stalled client) goes on in
// flush, on a goroutine of its own, with the write deadline. The caller is
// the writer (Queue said start).
func (w *WebSocket) Write() {
	if w.raw == nil {
		go w.flush()
		return
	}
	for range inlineRounds {
		bufs, ok := w.takeQueue(false)
		if !ok {
			return
		}
		if !w.afterWrite(writeNonblock(w.raw, bufs)) {
			return
		}
	}
	go w.flush()
}

// afterWrite goes on from a non-blocking write of what takeQueue gave
// (writeNonblock's, or a Sender's): rest is what the kernel did not take.
// true: everything was written, and the writer takes the queue again;
// false: the turn went on in flush, or ended with the session.
func (w *WebSocket) afterWrite(rest net.Buffers, err error) bool {
	if err != nil {
		if w.resumeAfterAbort(rest, err) {
			go w.flush()
			return false
		}
		w.writeFailed(err)
		return false
	}
	if len(rest) > 0 {
		// The kernel took part of it: queue the rest in front of what
		// came meanwhile, and wait for the socket in flush.
		w.mu.Lock()
		w.putBackLocked(rest)
		w.mu.Unlock()
		go w.flush()
		return false
	}
	return true
}

// takeQueue hands the writer everything queued; with nothing queued it ends
// the writer's turn (closing the connection if a close waited for the
// queue) and reports false. A writer that blocks (flush) has the write
// deadline set here, under mu, so that an abort's deadline is not undone.
func (w *WebSocket) takeQueue(blocking bool) (net.Buffers, bool) {
	w.mu.Lock()
	if len(w.queue) == 0 {
		w.writing = false
		closeNow := w.closeAfter
		w.mu.Unlock()
		if closeNow {
			_ = w.conn.Close()
		}
		return nil, false
	}
	bufs := w.queue
	w.queue, w.queued = nil, 0
	w.takenAborted = w.abortBy != 0
	if blocking {
		deadline := time.Now().Add(w.opts.WriteTimeout)
		if w.abortBy != 0 {
			deadline = time.Unix(0, w.abortBy)
		}
		_ = w.conn.SetWriteDeadline(deadline)
	}
	w.mu.Unlock()
	return bufs, true
}

// flush writes the queue until it is empty, coalescing every frame queued
// meanwhile into one writev, then exits. It may block (up to WriteTimeout
// per write), so it runs on a goroutine of its own.
func (w *WebSocket) flush() {
	for {
		bufs, ok := w.takeQueue(true)
		if !ok {
			return
		}
		if _, err := bufs.WriteTo(w.conn); err != nil {
			if w.resumeAfterAbort(bufs, err) {
				continue
			}
			w.writeFailed(err)
			return
		}
	}
}

// putBackLocked puts what a writer did not write (rest) back in front of
// the queue. Of buffers taken before an abort only the frame the write was
// in, rest[0], goes back: the close frame comes right after it. Called
// with w.mu held.
func (w *WebSocket) putBackLocked(rest net.Buffers) {
	if w.abortBy != 0 && !w.takenAborted && len(rest) > 1 {
		rest = rest[:1]
	}
	for _, b := range rest {
		w.queued += int32(len(b))
	}
	w.queue = append(rest, w.queue...)
}

// resumeAfterAbort reports whether a failed write was one that an abort
// interrupted (its deadline set to now) and the writer should go on, with
// what it had not written (rest) put back as putBackLocked does. Only once
// per connection, and only before abortBy.
func (w *WebSocket) resumeAfterAbort(rest net.Buffers, err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.abortBy == 0 || w.resumed || time.Now().UnixNano() >= w.abortBy {
		return false
	}
	w.resumed = true
	w.putBackLocked(rest)
	return true
}

// writeFailed ends the writer and the session after a failed write.
func (w *WebSocket) writeFailed(err error) {
	w.mu.Lock()
	w.writing = false
	w.queue, w.queued = nil, 0
	w.mu.Unlock()
	w.h.End("write: "+err.Error(), CloseDrop)
	_ = w.conn.Close()
}

// Close: see Transport and CloseMode.
func (w *WebSocket) Close(how CloseMode, frames ...[]byte) {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return
	}
	w.closing = true
	closeNow, write := true, false
	switch how {
	case CloseGraceful:
		for _, f := range frames {
			w.queue = append(w.queue, f)
			w.queued += int32(len(f))
		}
		if len(w.queue) > 0 {
			w.closeAfter = true
			closeNow = false
			if !w.writing {
				w.writing = true
				go w.flush()
			}
		}
	case CloseAbort:
		closeNow = false
		w.closeAfter = true
		w.abortBy = time.Now().Add(AbortGrace).UnixNano()
		if w.writing {
			// A writer is at work, perhaps in the frame at the queue's head
			// (the rest of a partial write): keep that one, drop the others,
			// and interrupt a write that waits for the client. The writer
			// resumes with the frame it was in (resumeAfterAbort).
			keep := w.queue[:min(len(w.queue), 1)]
			w.queue = append(keep[:len(keep):len(keep)], frames...)
			_ = w.conn.SetWriteDeadline(time.Now())
		} else {
			// Nothing is being written: the connection is between frames.
			w.queue = append(net.Buffers(nil), frames...)
			w.writing = true
			write = true
			_ = w.conn.SetWriteDeadline(time.Unix(0, w.abortBy))
		}
		w.queued = 0
		for _, f := range w.queue {
			w.queued += int32(len(f))
		}
	default:
		w.queue, w.queued = nil, 0
	}
	w.mu.Unlock()
	if closeNow {
		_ = w.conn.Close()
	}
	if write {
		w.Write()
	}
	if w.opts.Poller != nil {
		w.opts.Poller.forget(w)
	}
}

// moveIn queues what a polling session had queued, without a bound (it
// was bounded there), on an upgrade; start: the caller must Write.
func (w *WebSocket) moveIn(frames [][]byte) (start bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closing || len(frames) == 0 {
		return false
	}
	for _, f := range frames {
		w.queue = append(w.queue, f)
		w.queued += int32(len(f))
	}
	if w.writing {
		return false
	}
	w.writing = true
	return true
}

// Idle reports that no writer is at work and nothing is queued (tests).
func (w *WebSocket) Idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.writing && len(w.queue) == 0
}

func (w *WebSocket) isClosing() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closing
}

// framePool holds read buffers; a socket holds one only while it reads a
// frame's payload, never while idle.
var framePool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// readLoop runs on the socket's own goroutine, started fresh after the
// upgrade so its stack is small while it waits.
func (w *WebSocket) readLoop() {
	var hdrBuf [ws.MaxHeaderSize - 2]byte
	for {
		h, err := ws.ReadHeaderBuffer(w.conn, hdrBuf[:])
		if errors.Is(err, ws.ErrHeaderLengthMSB) {
			h.Length, err = lengthMSB, nil
		}
		if err != nil {
			w.h.End(readReason(err), CloseDrop)
			return
		}
		if !w.checkHeader(h) {
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
		if _, err := io.ReadFull(w.conn, buf); err != nil {
			framePool.Put(bp)
			w.h.End(readReason(err), CloseDrop)
			return
		}
		ws.Cipher(buf, h.Mask, 0)
		keep := w.handleFrame(h, buf)
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
func (w *WebSocket) checkHeader(h ws.Header) bool {
	control := h.OpCode&0x8 != 0
	switch {
	case h.Length == lengthMSB:
		return w.protocolError("length", ws.StatusProtocolError, "frame length with its top bit set")
	case h.Rsv == rsv1>>4 && w.deflate && (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary):
		// A compressed message (permessage-deflate); its inflated size is
		// bounded in handleFrame.
	case h.Rsv != 0:
		// Only permessage-deflate's RSV1, and only once negotiated, on
		// the first frame of a data message.
		return w.protocolError("rsv", ws.StatusProtocolError, "reserved bits set without an extension")
	case h.OpCode > ws.OpBinary && !control || h.OpCode > ws.OpPong:
		return w.protocolError("opcode", ws.StatusProtocolError, "reserved opcode")
	case control && h.Length > 125:
		return w.protocolError("control_too_large", ws.StatusProtocolError, "control frame over 125 bytes")
	case control && !h.Fin:
		return w.protocolError("fragmented", ws.StatusProtocolError, "fragmented control frame")
	case h.Length > int64(w.opts.MaxPayload):
		return w.protocolError("too_large", ws.StatusMessageTooBig, "frame too large")
	case !h.Masked:
		return w.protocolError("unmasked", ws.StatusProtocolError, "frames must be masked")
	}
	return true
}

// protocolError ends the session for a frame that breaks the protocol,
// with a close frame that tells the client why (reason is sent as is: it
// must say what the client did, in words it knows, never a Go error's
// text) and that does not wait behind what is queued. It counts the frame
// by kind and reports false: stop reading.
func (w *WebSocket) protocolError(kind string, code Status, reason string) bool {
	w.h.BadFrame(kind)
	w.h.End(reason, CloseAbort, CloseFrame(code, reason))
	return false
}

// checkClose reads a client's close frame body: no body, or a valid code
// and a UTF-8 reason. It closes with 1002 or 1007 and reports false
// otherwise.
func (w *WebSocket) checkClose(body []byte) bool {
	switch {
	case len(body) == 0:
		return true
	case len(body) == 1:
		return w.protocolError("close", ws.StatusProtocolError, "close frame with a one-byte body")
	}
	code := ws.StatusCode(binary.BigEndian.Uint16(body))
	if !validCloseCode(code) {
		return w.protocolError("close", ws.StatusProtocolError, "invalid close code "+strconv.Itoa(int(code)))
	}
	if !utf8.Valid(body[2:]) {
		return w.protocolError("utf8", ws.StatusInvalidFramePayloadData, "close reason is not valid UTF-8")
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

func readReason(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return "connection closed"
	}
	return "read: " + err.Error()
}

// handleFrame handles one frame and reports whether to keep reading.
func (w *WebSocket) handleFrame(h ws.Header, payload []byte) bool {
	if !h.Fin || h.OpCode == ws.OpContinuation {
		return w.protocolError("fragmented", ws.StatusUnsupportedData, "fragmented messages are not supported")
	}
	// Every frame but a close (which ends the socket anyway) counts against
	// the session's budget: pings, pongs and noops cost a read and a
	// dispatch, and a ping a write.
	limited := false
	if h.OpCode != ws.OpClose {
		var ok bool
		if limited, ok = w.h.Admit(); !ok {
			return false
		}
	}
	if h.Rsv != 0 {
		// checkHeader let RSV1 through on a data frame of a socket that
		// negotiated permessage-deflate (inflated after Admit: a frame
		// counts against the budget before it costs). MaxPayload bounds the message
		// inflated, not only as sent: a small frame that inflates to
		// gigabytes is refused at MaxPayload+1 bytes.
		p, err := inflate(payload, w.opts.MaxPayload)
		switch {
		case errors.Is(err, errInflateTooLarge):
			return w.protocolError("too_large", ws.StatusMessageTooBig, "message too large once inflated")
		case err != nil:
			return w.protocolError("inflate", ws.StatusInvalidFramePayloadData, "compressed message is not valid deflate data")
		}
		payload = p
	}
	switch h.OpCode {
	case ws.OpText:
		if !utf8.Valid(payload) {
			return w.protocolError("utf8", ws.StatusInvalidFramePayloadData, "text frame is not valid UTF-8")
		}
		return w.h.Packet(payload, limited)
	case ws.OpPing:
		if !limited {
			if ok, start := w.Queue(wsFrame(ws.OpPong, payload)); ok && start {
				w.Write()
			}
		}
		return true
	case ws.OpPong:
		return true
	case ws.OpClose:
		if w.checkClose(payload) {
			w.h.End("client closed the WebSocket", CloseGraceful, NormalClose)
		}
		return false
	default: // binary; reserved opcodes were refused by checkHeader
		return w.protocolError("binary", ws.StatusUnsupportedData, "binary frames are not supported")
	}
}

// bufferedConn reads what the HTTP server had already buffered before
// reading the connection itself (a client that sent a frame right after its
// upgrade request).
type bufferedConn struct {
	net.Conn
	extra []byte
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if len(c.extra) > 0 {
		n := copy(p, c.extra)
		c.extra = c.extra[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
