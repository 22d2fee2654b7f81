package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
	"github.com/roomcast/roomcast/services/gateway/internal/sio"
)

// transportSetup makes the gateway's transport layer from cfg: the
// handshake's checks and open packet, and the WebSocket options.
func (g *Gateway) transportSetup() {
	cfg := &g.cfg
	g.eio = engineio.Server{
		Handshake: engineio.Handshake{
			Origins:  cfg.AllowedOrigins,
			Draining: g.draining.Load,
			OriginRefused: func(origin, remote string) {
				g.m.authFailures.WithLabelValues("origin").Inc()
				g.log.Info().Str("origin", origin).Str("remote", remote).Msg("refused a socket from an origin not allowed")
			},
			PingInterval: cfg.PingInterval,
			PingTimeout:  cfg.PingTimeout,
			MaxPayload:   cfg.MaxPayload,
			NewID:        func() string { return randomID(20) },
		},
		WriteTimeout:      cfg.WriteTimeout,
		ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout,
		Start:             g.startSocket,
		StartPolling:      g.startPolling,
		UpgradeFailed: func(err error, remote string) {
			g.log.Debug().Err(err).Str("remote", remote).Msg("upgrade failed")
		},
		AcceptFailed:    g.acceptFailed,
		AcceptRecovered: g.acceptRecovered,
		Deflate:         cfg.DeflateThreshold >= 0,
	}
	g.wsOpts = engineio.Options{
		MaxPayload:     cfg.MaxPayload,
		SendQueueBytes: cfg.SendQueueBytes,
		WriteTimeout:   cfg.WriteTimeout,
		TCPSendBuffer:  cfg.TCPSendBuffer,
		Poller:         g.poller,
	}
}

// SocketIOListener wraps ln: Socket.IO upgrades are served from it
// directly (engineio.Server.Listener), and the http.Server given the
// result gets the other requests.
func (g *Gateway) SocketIOListener(ln net.Listener) net.Listener { return g.eio.Listener(ln) }

// acceptFailed counts an accept error, and makes /readyz say "not
// accepting" until an accept succeeds again.
func (g *Gateway) acceptFailed(err error, retry time.Duration) {
	g.m.acceptErrors.WithLabelValues(engineio.AcceptErrorLabel(err)).Inc()
	msg := err.Error()
	if g.notAccepting.Swap(&msg) == nil {
		g.log.Error().Err(err).Msg("accept failed: no new connection (socket or HTTP) until it passes; retrying")
	} else if retry == time.Second {
		g.log.Warn().Err(err).Msg("accept still failing; retrying every second")
	}
}

func (g *Gateway) acceptRecovered() {
	if g.notAccepting.Swap(nil) != nil {
		g.log.Info().Msg("accepting connections again")
	}
}

// startPolling starts a long-polling session sid: its open packet is the
// answer to the opening GET (engineio), its CONNECT deadline armed.
func (g *Gateway) startPolling(sid, token string) *engineio.Polling {
	s := newSocket(g, token)
	p := g.eio.NewPolling(sid, s, &s.ws, &g.wsOpts)
	s.poll.Store(p)
	s.mu.Lock()
	s.armLocked(g.cfg.ConnectTimeout)
	s.mu.Unlock()
	return p
}

// startSocket starts the session of an upgraded connection: the open
// packet is sent (unless it went with the 101), the CONNECT deadline
// armed, and its transport reads.
func (g *Gateway) startSocket(u engineio.Upgraded) {
	s := newSocket(g, u.Token)
	s.ws.Init(u, s, &g.wsOpts)
	s.mu.Lock()
	s.armLocked(g.cfg.ConnectTimeout)
	s.mu.Unlock()
	s.ws.Read()
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
		if p := s.pendingToken; p != nil {
			token = *p
		}
	}
	s.pendingToken = nil
	tok, err := g.verifier.verify(token)
	if err != nil {
		return g.refuse(s, labelOf(err.Error()), err.Error())
	}
	if g.revoked.refuses(tok.user, tok.iat) {
		return g.refuse(s, "revoked", reasonRevoked)
	}
	// Connection state recovery: a client back after a cut names its
	// session; one of this user's, still kept, gets its id back.
	var (
		plan     *recoveryPlan
		restored []replayed
	)
	sid, pid, result := s.id, "", ""
	if g.sessions != nil {
		pid = randomID(20)
		if auth.PID != "" {
			var rec *sessionRecord
			if rec, result = g.loadSession(context.Background(), auth.PID, tok.user); rec != nil {
				if plan, result = g.planRecovery(context.Background(), tok.user, rec, auth.Offset); plan != nil {
					sid, pid = rec.SID, auth.PID
				}
			}
		}
	}
	client := sid
	if auth.ClientID != "" && proto.ValidateID(auth.ClientID) == nil {
		client = auth.ClientID
	}
	// id, user, client and pid are written under mu, and only while the
	// socket is open: the CONNECT deadline's close (on the heartbeat)
	// reads them.
	s.mu.Lock()
	if s.state != stateOpen {
		s.mu.Unlock()
		return false
	}
	s.id, s.user, s.client = sid, tok.user, client
	if plan == nil && s.sess != nil {
		s.sess.pid = pid
	} // else set once recovered: a cut before keeps the record it came for
	s.state = stateConnected
	s.mu.Unlock()
	if ss := s.sess; ss != nil {
		// Where the session starts: every stored broadcast queued to it
		// from now on is above, or placed as an inversion (recovery_order.go).
		ss.order.mu.Lock()
		ss.order.start = g.highSeq.Load()
		ss.order.max = ss.order.start
		ss.order.mu.Unlock()
		// A recovering socket holds its live broadcasts back until what
		// it missed is queued before them.
		ss.holding.Store(plan != nil)
	}

	if wait := g.cooldowns.left(s.user); wait > 0 {
		// As for the cap, 429. The stock client's reconnection after the
		// flood close (at least 500 ms) comes after the cooldown (400 ms by
		// default): it never meets this refusal, which it would take as
		// final; a flood's reconnect at once does.
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
	if plan != nil {
		if result, restored = g.restoreSession(context.Background(), s, plan, flush); result == recovered {
			// Before the socket may write its own record (when it is
			// cut): both go out in this order on one connection.
			g.forgetSession(pid)
		} else {
			pid = randomID(20) // a new session (the client resyncs)
		}
		s.mu.Lock()
		s.sess.pid = pid
		s.mu.Unlock()
	}
	if result != "" {
		g.m.recoveries.WithLabelValues(result).Inc()
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
	s.send(textFrame(sio.AppendConnectOK(nil, s.id, pid)))
	switch {
	case result == recovered:
		s.sendRestored(restored)
	case plan != nil:
		s.releaseHeld(nil, func(*engineio.Message) bool { return true })
	}
	s.logger().Str("client", s.client).Str("recovery", result).Msg("socket connected")
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
// of string values without escapes, {"token":"…","clientId":"…"} and, from a
// client asking for its session back, "pid" and "offset" (any order, any
// key alone), without encoding/json: parsing it was a
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
		var field *string
		bit := 0
		switch key {
		case "token":
			field, bit = &a.Token, 1
		case "clientId":
			field, bit = &a.ClientID, 2
		case "pid":
			field, bit = &a.PID, 4
		case "offset":
			field, bit = &a.Offset, 8
		default:
			return a, false
		}
		if seen&bit != 0 {
			return a, false
		}
		seen |= bit
		*field = val
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
