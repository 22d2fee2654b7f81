package gateway

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
	"github.com/roomcast/roomcast/services/gateway/internal/sio"
)

// Socket states, in the only order they are passed through.
const (
	stateOpen      uint8 = iota // upgraded, waiting for CONNECT
	stateConnected              // authenticated, in its rooms
	stateClosing                // leaving: its transport closes
)

// socket is one Socket.IO session: its state, rooms, budget and heartbeat,
// above its transport (engineio), whose Handler it is. While idle it
// costs this struct (its WebSocket inside it), the WebSocket's place in
// the gateway's poller and one timer: no goroutine and no buffers.
//
// Lock order: see locksordering.txt (socket.mu comes after the shard locks
// and before heartbeats.mu; the transport's lock is a leaf).
type socket struct {
	gw *Gateway
	ws engineio.WebSocket

	// id is set at creation; user and client are written once, under mu,
	// by connect while the state is stateOpen (so never once a close has
	// begun), before the socket is published to rooms and the user index.
	// Read-only from then: read them after taking mu, or on a socket found
	// in a room or the user index.
	id     string
	user   string
	client string
	// sess is its recovery state, nil when recovery is off; made with the
	// socket, never replaced.
	sess *session

	// Reader only (its goroutine, or the poller's one reader at a time, or
	// a polling session's one POST at a time, and the deep worker it hands
	// a message to while it waits).
	// From the upgrade request (a non-browser client's header or query),
	// until CONNECT; behind a pointer: browsers send it in the CONNECT,
	// and 8 bytes of every socket were what its recovery state needed.
	pendingToken *string
	// The socket's budget: every inbound frame takes a token (takeFrame).
	// float32: the two share the 8 bytes tokens alone took (a size class).
	tokens   float32
	excess   float32 // frames refused, drained at RateLimit: past RateBurst the socket is closed
	tokensAt int64   // when tokens was last topped up (mono)

	// Under mu. The small fields sit together: the struct is allocated per
	// socket, and padding between them cost a size class.
	mu          sync.Mutex
	state       uint8
	active      bool // updateClient {isActive}
	hasPresence bool // it has said updateClient at least once
	pingPending bool
	// Under heartbeats.mu: the socket's index in the heap; -1: none
	// scheduled. Here, where the fields under mu leave padding.
	hbIdx int32
	rooms []string // keys (Room.Key) of the (parent) rooms it is in
	// Chats it left with removeFromRoom: not re-adopted. Behind a pointer:
	// rare, and 8 bytes of every idle socket instead of 24.
	leftChats *[]string
	// The heartbeat: the CONNECT deadline, then the next ping or the pong
	// deadline (due), or the token's expiry if that comes first, run by
	// the gateway's heartbeats (one timer for every socket).
	due     int64 // when the current heartbeat step is due (mono)
	expires int64 // the token's exp (Unix ns); zero before CONNECT

	// The socket's place in the gateway's heartbeats, under heartbeats.mu
	// (with hbIdx).
	hbAt int64 // when heartbeats runs onHeartbeat (mono)

	// poll is its long-polling transport, from its open until it upgrades
	// to its WebSocket (nil: the WebSocket is its transport).
	poll atomic.Pointer[engineio.Polling]
}

func newSocket(gw *Gateway, token string) *socket {
	s := &socket{
		gw:       gw,
		id:       randomID(20),
		tokens:   float32(gw.cfg.RateBurst),
		tokensAt: mono(),
		hbIdx:    -1,
	}
	if token != "" {
		s.pendingToken = &token
	}
	if gw.sessions != nil {
		s.sess = &session{}
	}
	return s
}

// logger is for per-socket events, at debug level: with thousands of
// sockets connecting at once (a reconnect storm), a line per connect at info
// costs more CPU than the connect itself, and a disabled level costs nothing.
func (s *socket) logger() *zerolog.Event {
	return s.gw.log.Debug().Str("socket", s.id).Str("user", s.user)
}

func textFrame(packet []byte) []byte { return engineio.TextFrame(packet) }

// Frames every socket may be sent; shared, never modified.
var (
	pingFrame           = textFrame(sio.PingPacket)
	disconnectFrame     = textFrame(sio.DisconnectPacket)
	goingAwayFrame      = engineio.CloseFrame(engineio.StatusGoingAway, "server shutting down")
	normalCloseFrm      = engineio.NormalClose
	floodCloseFrame     = engineio.CloseFrame(engineio.StatusPolicyViolation, "rate limit exceeded")
	noConnectCloseFrame = engineio.CloseFrame(engineio.StatusPolicyViolation, "no CONNECT in time")
	// The server failed a CONNECT (NATS did not take or confirm the
	// socket's subscriptions): the client may reconnect at once.
	setupCloseFrame = engineio.CloseFrame(engineio.StatusInternalError, "the server could not set up this socket: reconnect")
	// internalCloseFrame: handling one of the socket's packets panicked.
	internalCloseFrame = engineio.CloseFrame(engineio.StatusInternalError, "internal error: reconnect")
	slowCloseFrame     = engineio.CloseFrame(engineio.StatusTryAgainLater, "slow consumer: messages came faster than the connection took them; reconnect and resync")
)

// transport is the socket's connection to its client: its long-polling
// transport until the client upgrades, its WebSocket from then (or from
// the start).
func (s *socket) transport() engineio.Transport {
	if p := s.poll.Load(); p != nil {
		return p
	}
	return &s.ws
}

// send queues one frame and writes it now, without blocking. It is the only
// way anything is written to the socket (pongs, pings and closes included),
// so writes never interleave. It returns false when the socket is closing or
// was just cut off because its queue overflowed.
func (s *socket) send(frame []byte) bool {
	t := s.transport()
	ok, start := t.Queue(frame)
	if start {
		t.Write()
	}
	return ok
}

// enqueue queues one frame without writing it; start: the caller must
// call writeNow (engineio.Transport's Queue).
func (s *socket) enqueue(frame []byte) (ok, start bool) { return s.transport().Queue(frame) }

// enqueueMessage is enqueue of a broadcast: compressed when the socket
// negotiated permessage-deflate (the compression is made once, for every
// member: engineio.Message). With recovery on, its place in the socket's
// order is recorded as it is queued, and while the socket replays what it
// missed, it waits for the replay (recovery.go).
func (s *socket) enqueueMessage(m *engineio.Message) (ok, start bool) {
	t := s.transport()
	ss := s.sess
	if ss == nil {
		return t.Queue(m.For(t))
	}
	if ss.holding.Load() && ss.holdBack(m) {
		return true, false
	}
	return t.QueueOrdered(m, &ss.order)
}

// writeNow writes what enqueue queued, when enqueue said start.
func (s *socket) writeNow() { s.transport().Write() }

// close disconnects the socket now: nothing queued is written.
func (s *socket) close(reason string) { s.shutdown(reason, false, engineio.CloseDrop) }

// closeWith writes frames (e.g. a Socket.IO DISCONNECT and a WebSocket
// close) after what is already queued, then closes.
func (s *socket) closeWith(reason string, frames ...[]byte) {
	s.shutdown(reason, false, engineio.CloseGraceful, frames...)
}

// abort closes the socket with a close frame that does not wait behind its
// queue (engineio.CloseAbort).
func (s *socket) abort(reason string, frame []byte) {
	s.shutdown(reason, false, engineio.CloseAbort, frame)
}

// cut ends the session as neither its client nor the server meant to
// end it (a lost connection, a ping timeout, a slow consumer, a gateway
// going away): its client may come back for it (recovery.go).
func (s *socket) cut(reason string, how engineio.CloseMode, frames ...[]byte) {
	s.shutdown(reason, true, how, frames...)
}

// shutdown ends the session (once): it leaves its rooms and the user
// index, its heartbeat is cancelled, and its transport closed with how
// and frames. keep: a connected session's record is kept for recovery.
func (s *socket) shutdown(reason string, keep bool, how engineio.CloseMode, frames ...[]byte) {
	s.mu.Lock()
	if s.state >= stateClosing {
		s.mu.Unlock()
		return
	}
	keep = keep && s.state == stateConnected && s.sess != nil && s.sess.pid != ""
	s.state = stateClosing
	s.gw.hb.cancel(s)
	s.mu.Unlock()
	s.transport().Close(how, frames...)
	rooms := s.gw.forget(s)
	if keep {
		s.gw.saveSession(s, rooms)
	}
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
		s.cut("ping timeout", engineio.CloseDrop)
		return
	}
	s.pingPending = true
	s.armLocked(s.gw.cfg.PingTimeout)
	if ss := s.sess; ss != nil {
		ss.order.pinged()
	}
	s.mu.Unlock()
	s.send(pingFrame)
}

func (s *socket) onPong() {
	s.mu.Lock()
	if s.pingPending && s.state == stateConnected {
		s.pingPending = false
		s.armLocked(s.gw.cfg.PingInterval)
		if ss := s.sess; ss != nil {
			ss.order.ponged()
		}
	}
	s.mu.Unlock()
}

// protocolError closes the socket for a frame or packet that breaks the
// protocol, with a close frame that tells the client why (reason is sent
// as is: it must say what the client did, in words it knows, never a Go
// error's text) and that does not wait behind what is queued. It counts the
// frame by kind and reports false: stop reading.
func (s *socket) protocolError(kind string, code engineio.Status, reason string) bool {
	s.gw.m.badFrames.WithLabelValues(kind).Inc()
	s.abort(reason, engineio.CloseFrame(code, reason))
	return false
}

// sioReason is the text of one of sio's parse errors, for a close reason.
func sioReason(err error) string { return strings.TrimPrefix(err.Error(), "sio: ") }

// The socket is its transport's engineio.Handler.
var _ engineio.Handler = (*socket)(nil)

// Admit takes a token of the socket's budget for an inbound frame. Over
// budget, a frame that asks for work is dropped (an endpoint call is
// answered rate_limited); one that keeps the session alive or ends it is
// still honored. A socket that keeps sending after that is closed
// (docs/decisions.md, "Limits per socket").
func (s *socket) Admit() (limited, ok bool) {
	limited = !s.takeFrame()
	if limited {
		s.gw.m.limitedFrames.Inc()
		if s.excess > float32(s.gw.cfg.RateBurst) {
			s.gw.m.badFrames.WithLabelValues("flood").Inc()
			s.gw.log.Info().Str("socket", s.id).Str("user", s.user).Msg("closing a socket that kept sending beyond its rate limit")
			if s.user != "" {
				s.gw.cooldowns.start(s.user, s.gw.cfg.FloodCooldown)
			}
			s.closeWith("flood: kept sending beyond the rate limit", floodCloseFrame)
			return true, false
		}
	}
	return limited, true
}

// Packet handles one Engine.IO packet.
func (s *socket) Packet(p []byte, limited bool) bool { return s.handleText(p, limited) }

// Upgraded: the socket's transport is its WebSocket from now on.
func (s *socket) Upgraded() {
	s.poll.Store(nil)
	s.logger().Msg("socket upgraded from polling to WebSocket")
}

// End ends the session at its transport's word: the connection was lost,
// or closed under it, which a client that comes back may recover from.
func (s *socket) End(reason string, how engineio.CloseMode, frames ...[]byte) {
	s.cut(reason, how, frames...)
}

// BadFrame counts a frame the transport refused.
func (s *socket) BadFrame(kind string) { s.gw.m.badFrames.WithLabelValues(kind).Inc() }

// Overflow cuts off a socket whose send queue is full.
func (s *socket) Overflow(queued int) {
	s.gw.m.slowDisconnects.Inc()
	s.gw.log.Warn().Str("socket", s.id).Str("user", s.user).Int("queued", queued).Msg("send queue overflow: disconnecting slow socket")
	s.cut("slow consumer", engineio.CloseAbort, slowCloseFrame)
}

func (s *socket) handleText(payload []byte, limited bool) bool {
	p, err := sio.ParsePacket(payload)
	if err != nil {
		return s.protocolError("malformed", engineio.StatusProtocolError, "malformed packet: "+sioReason(err))
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
			return s.handleMessage(p, limited)
		})
	}
	// A client ping (heartbeats go server → client in v4), open or upgrade.
	if p.Engine == sio.EnginePing {
		return s.protocolError("unexpected", engineio.StatusProtocolError, "Engine.IO ping from a client: in v4 the server pings and the client answers")
	}
	return s.protocolError("unexpected", engineio.StatusProtocolError, "unexpected Engine.IO packet type "+string(p.Engine))
}

func (s *socket) handleMessage(p sio.Packet, limited bool) bool {
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	if limited && p.Type != sio.Event && p.Type != sio.Disconnect {
		// Over budget: a CONNECT waits for a retry (or the CONNECT
		// deadline), a stray ack changes nothing anyway.
		return true
	}
	if state == stateOpen {
		if p.Type != sio.Connect {
			return s.protocolError("not_connect", engineio.StatusProtocolError, "the first packet must be a CONNECT")
		}
		if p.Namespace != "/" {
			s.send(textFrame(sio.AppendNamespaceError(nil, p.Namespace)))
			return true
		}
		return s.gw.connect(s, p.Data)
	}
	if p.Namespace != "/" {
		return s.protocolError("namespace", engineio.StatusProtocolError, "a packet for a namespace other than /")
	}
	switch p.Type {
	case sio.Event:
		return s.handleEvent(p, limited)
	case sio.Disconnect:
		s.closeWith("client disconnected", normalCloseFrm)
		return false
	case sio.Connect:
		return s.protocolError("second_connect", engineio.StatusProtocolError, "a second CONNECT: this socket is connected already")
	case sio.Ack:
		// The gateway never asks for acks; a stray one changes nothing.
		return true
	}
	return s.protocolError("unexpected", engineio.StatusProtocolError, "unexpected Socket.IO packet type "+string(p.Type))
}

func (s *socket) handleEvent(p sio.Packet, limited bool) bool {
	name, args, err := sio.ParseEvent(p.Data)
	if err != nil {
		// As the reference server does with `42{}`: the peer is broken.
		return s.protocolError("malformed", engineio.StatusProtocolError, "malformed EVENT: "+sioReason(err))
	}
	var ack proto.Ack
	endpoint := "unknown"
	var (
		call    proto.EndpointCall
		callErr error
	)
	userOK, userWait := true, time.Duration(0)
	if name == proto.IncomingEvent && !limited {
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
	case limited:
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
	if s.leftChats == nil {
		if left {
			s.leftChats = &[]string{name}
		}
		return
	}
	chats := *s.leftChats
	for i, c := range chats {
		if c == name {
			if !left {
				*s.leftChats = append(chats[:i], chats[i+1:]...)
			}
			return
		}
	}
	if left {
		*s.leftChats = append(chats, name)
	}
}

func (s *socket) leftChat(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leftChats == nil {
		return false
	}
	for _, c := range *s.leftChats {
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
