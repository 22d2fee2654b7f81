package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/ws"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/sio"
)

// serveSocketIO upgrades /socket.io/?EIO=4&transport=websocket. Everything
// that can be refused is refused with a plain HTTP status before the upgrade:
// once upgraded, a client only understands frames.
func (g *Gateway) serveSocketIO(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("EIO") != "4" {
		http.Error(w, "unsupported Engine.IO version: this server speaks EIO=4 (socket.io-client v3/v4)", http.StatusBadRequest)
		return
	}
	if q.Get("transport") != "websocket" {
		http.Error(w, "unsupported transport: connect with transports: [\"websocket\"]", http.StatusBadRequest)
		return
	}
	if g.draining.Load() {
		http.Error(w, "gateway is shutting down: reconnect to another", http.StatusServiceUnavailable)
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" && !g.originAllowed(origin) {
		g.m.authFailures.WithLabelValues("origin").Inc()
		g.log.Info().Str("origin", origin).Str("remote", r.RemoteAddr).Msg("refused a socket from an origin not allowed")
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	token := q.Get("token")
	if h, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		token = strings.TrimSpace(h)
	}
	open := g.openFrame()
	ow := &openingWriter{ResponseWriter: w, open: open}
	conn, rw, _, err := (&ws.HTTPUpgrader{Timeout: g.cfg.WriteTimeout}).Upgrade(r, ow)
	if err != nil {
		// The upgrader has answered with an HTTP error already.
		g.log.Debug().Err(err).Str("remote", r.RemoteAddr).Msg("upgrade failed")
		return
	}
	_ = conn.SetDeadline(time.Time{})
	var extra []byte
	if rw != nil && rw.Reader.Buffered() > 0 {
		b, _ := rw.Reader.Peek(rw.Reader.Buffered())
		extra = bytes.Clone(b)
	}
	g.startSocket(conn, extra, token, open, ow.opened)
}

// openFrame is a new socket's Engine.IO open packet, as a frame.
func (g *Gateway) openFrame() []byte {
	return textFrame(sio.AppendOpen(nil, sio.OpenPayload{
		SID:          randomID(20),
		PingInterval: g.cfg.PingInterval.Milliseconds(),
		PingTimeout:  g.cfg.PingTimeout.Milliseconds(),
		MaxPayload:   int64(g.cfg.MaxPayload),
	}))
}

// startSocket starts an upgraded connection's socket: extra are bytes the
// client sent after its request, read already; open is the socket's open
// packet, already written with the 101 when opened.
func (g *Gateway) startSocket(conn net.Conn, extra []byte, token string, open []byte, opened bool) {
	raw := rawConnOf(conn)
	if tc, ok := conn.(*net.TCPConn); ok && g.cfg.TCPSendBuffer > 0 {
		_ = tc.SetWriteBuffer(g.cfg.TCPSendBuffer)
	}
	if len(extra) > 0 {
		conn = &bufferedConn{Conn: conn, extra: extra}
	}
	s := newSocket(g, conn, raw, token)
	if !opened {
		s.send(open)
	}
	s.mu.Lock()
	s.armLocked(g.cfg.ConnectTimeout)
	s.mu.Unlock()
	if _, buffered := conn.(*bufferedConn); !buffered && g.poller != nil && g.poller.add(s) {
		return // the poller reads it from now on
	}
	// A fresh goroutine: this handler's stack has grown during the upgrade,
	// and an idle socket should hold only a small one.
	go s.readLoop()
}

// openingWriter sends the Engine.IO open packet in the same write as the
// upgrade's 101 response: one write (and, at the client, one read) fewer
// per connect, which a reconnect storm pays thousands of times. It lets
// the upgrader hijack the connection, and sits under the upgrader's
// buffered writer; any other response (a refusal) is written unchanged.
type openingWriter struct {
	http.ResponseWriter
	open   []byte
	opened bool // the open packet went out with the 101
}

func (o *openingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(o.ResponseWriter).Hijack()
	if err != nil {
		return conn, rw, err
	}
	rw.Writer.Reset(&upgradeWriter{Conn: conn, o: o})
	return conn, rw, nil
}

// Unwrap lets http.ResponseController reach the server's writer.
func (o *openingWriter) Unwrap() http.ResponseWriter { return o.ResponseWriter }

// switchingProtocols starts the upgrader's 101 response.
var switchingProtocols = []byte("HTTP/1.1 101 ")

type upgradeWriter struct {
	net.Conn
	o *openingWriter
}

// Write writes p; the first write of a 101 response (the upgrader writes
// it whole, in one flush) carries the open packet after it.
func (u *upgradeWriter) Write(p []byte) (int, error) {
	if u.o.opened || !bytes.HasPrefix(p, switchingProtocols) || !bytes.HasSuffix(p, []byte("\r\n\r\n")) {
		return u.Conn.Write(p)
	}
	b := make([]byte, 0, len(p)+len(u.o.open))
	b = append(append(b, p...), u.o.open...)
	n, err := u.Conn.Write(b)
	if n >= len(p) {
		u.o.opened = n == len(b)
		n = len(p)
	}
	if err == nil && !u.o.opened {
		err = io.ErrShortWrite
	}
	return n, err
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

func (g *Gateway) originAllowed(origin string) bool {
	for _, o := range g.cfg.AllowedOrigins {
		if originMatches(o, origin) {
			return true
		}
	}
	return false
}

// originMatches says whether an Origin header matches one entry of the
// allow-list: "*", the origin itself, or scheme://host:* for host on any
// port (or none). Anything else after the host (a longer host name such as
// localhost.example.com) does not match.
func originMatches(pattern, origin string) bool {
	if pattern == "*" || strings.EqualFold(pattern, origin) {
		return true
	}
	base, ok := strings.CutSuffix(pattern, ":*")
	if !ok || len(origin) < len(base) || !strings.EqualFold(origin[:len(base)], base) {
		return false
	}
	port := origin[len(base):]
	if port == "" {
		return true
	}
	port, ok = strings.CutPrefix(port, ":")
	if !ok || port == "" || len(port) > 5 {
		return false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	return true
}

// connect authenticates a CONNECT and puts the socket in its client and user
// rooms. It reports whether to keep reading.
func (g *Gateway) connect(s *socket, data []byte) bool {
	auth, ok := quickConnectAuth(data)
	if !ok {
		var err error
		if auth, err = sio.ParseConnectAuth(data); err != nil {
			return g.refuse(s, "malformed", "auth must be an object {token, clientId}")
		}
	}
	token := auth.Token
	if token == "" {
		token = s.pendingToken
	}
	s.pendingToken = ""
	tok, err := g.verifier.verify(token)
	if err != nil {
		return g.refuse(s, labelOf(err.Error()), err.Error())
	}
	if g.revoked.refuses(tok.user, tok.iat) {
		return g.refuse(s, "revoked", reasonRevoked)
	}
	client := s.id
	if auth.ClientID != "" && proto.ValidateID(auth.ClientID) == nil {
		client = auth.ClientID
	}
	// user and client are written under mu, and only while the socket is
	// open: the CONNECT deadline's close (on the heartbeat) reads them.
	s.mu.Lock()
	if s.state != stateOpen {
		s.mu.Unlock()
		return false
	}
	s.user, s.client = tok.user, client
	s.state = stateConnected
	s.mu.Unlock()

	if wait := g.cooldowns.left(s.user); wait > 0 {
		// As for the cap, 429: the stock client's reconnection backoff
		// (1 s and more) comes after the cooldown; a flood's reconnect at
		// once does not get a fresh budget to flood with again.
		return g.refuseWith(s, "cooldown", http.StatusTooManyRequests,
			fmt.Sprintf("rate limit exceeded: a socket of this user was closed for flooding; connect again in %d ms", wait.Milliseconds()+1))
	}
	clientRoom, _ := proto.ClientRoom(s.user, s.client) // both validated above
	userRoom, _ := proto.UserRoom(s.user)               // validated by verify
	flush := false
	for _, step := range []func() (bool, error){
		func() (bool, error) { return g.addUserSocket(s) },
		func() (bool, error) { return g.join(s, clientRoom) },
		func() (bool, error) { return g.join(s, userRoom) },
	} {
		created, err := step()
		if errors.Is(err, errTooManySockets) {
			// 429: the user may connect again once one of its sockets
			// here has closed.
			return g.refuseWith(s, "too_many_sockets", http.StatusTooManyRequests,
				fmt.Sprintf("too many sockets for this user: at most %d on this gateway; close another tab or connection first", g.cfg.MaxSocketsPerUser))
		}
		if err != nil {
			s.abort("could not join the socket's own rooms: "+err.Error(), setupCloseFrame)
			return false
		}
		flush = flush || created
	}
	if g.revoked.refuses(tok.user, tok.iat) {
		// A revoke that came while the socket joined: onRevoke may have
		// looked for the user's sockets before this one was among them.
		return g.refuse(s, "revoked", reasonRevoked)
	}
	if flush {
		// Make sure the server has the new subscriptions before the client
		// hears it is connected: what is published after that reaches it.
		if err := g.nc.FlushTimeout(g.cfg.RequestTimeout); err != nil {
			s.abort("NATS did not confirm subscriptions: "+err.Error(), setupCloseFrame)
			return false
		}
	}
	s.mu.Lock()
	if s.state == stateConnected {
		// The token's expiry closes the socket with a server DISCONNECT
		// (the heartbeat timer fires for it too).
		s.expires = tok.exp.UnixNano()
		s.armLocked(g.cfg.PingInterval)
	}
	s.mu.Unlock()
	s.send(textFrame(sio.AppendConnectOK(nil, s.id)))
	s.logger().Str("client", s.client).Msg("socket connected")
	return true
}

// refuse answers a CONNECT with CONNECT_ERROR, then closes: the stock client
// emits connect_error and does not retry by itself.
func (g *Gateway) refuse(s *socket, label, message string) bool {
	return g.refuseWith(s, label, http.StatusUnauthorized, message)
}

// refuseWith is refuse with the code of the CONNECT_ERROR's data.
func (g *Gateway) refuseWith(s *socket, label string, code int, message string) bool {
	g.m.authFailures.WithLabelValues(label).Inc()
	s.gw.log.Debug().Str("socket", s.id).Str("reason", message).Msg("CONNECT refused")
	s.closeWith("CONNECT refused: "+message, textFrame(sio.AppendConnectError(nil, message, code)), normalCloseFrm)
	return false
}

// labelOf turns a refusal reason into a short metric label.
func labelOf(reason string) string {
	switch reason {
	case reasonNoToken:
		return "no_token"
	case reasonMalformed:
		return "malformed"
	case reasonExpired:
		return "expired"
	case reasonNotYetValid:
		return "not_yet_valid"
	case reasonFutureIat:
		return "future_iat"
	case reasonTimeType:
		return "time_type"
	case reasonTooLong:
		return "too_long"
	case reasonSignature:
		return "signature"
	case reasonAlgorithm:
		return "algorithm"
	case reasonNoExp:
		return "no_exp"
	case reasonNoSub, reasonBadSub:
		return "sub"
	}
	return "invalid"
}

// quickConnectAuth reads the CONNECT auth as clients spell it, a flat object
// of string values without escapes, {"token":"…","clientId":"…"} (either
// order, either key alone), without encoding/json: parsing it was a
// visible share of a CONNECT in a reconnect storm. Anything else (spaces,
// escapes, other keys, other types) reports false and goes to
// sio.ParseConnectAuth, which decides.
func quickConnectAuth(data []byte) (sio.ConnectAuth, bool) {
	var a sio.ConnectAuth
	if len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		return a, false
	}
	rest := data[1 : len(data)-1]
	seen := 0
	for len(rest) > 0 {
		key, val, next, ok := quickStringPair(rest)
		if !ok {
			return a, false
		}
		switch key {
		case "token":
			if seen&1 != 0 {
				return a, false
			}
			seen |= 1
			a.Token = val
		case "clientId":
			if seen&2 != 0 {
				return a, false
			}
			seen |= 2
			a.ClientID = val
		default:
			return a, false
		}
		rest = next
		if len(rest) > 0 {
			if rest[0] != ',' || len(rest) == 1 {
				return a, false
			}
			rest = rest[1:]
		}
	}
	return a, seen != 0
}

// quickStringPair reads "key":"value" from the start of b, where neither
// holds a quote, a backslash or a control character.
func quickStringPair(b []byte) (key, val string, rest []byte, ok bool) {
	k, b, ok := quickString(b)
	if !ok || len(b) == 0 || b[0] != ':' {
		return "", "", nil, false
	}
	v, b, ok := quickString(b[1:])
	if !ok {
		return "", "", nil, false
	}
	return k, v, b, true
}

func quickString(b []byte) (string, []byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", nil, false
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return string(b[1:i]), b[i+1:], true
		case c == '\\' || c < 0x20:
			return "", nil, false
		}
	}
	return "", nil, false
}
