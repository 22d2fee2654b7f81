package engineio

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Server opens sessions: it answers opening requests on both paths to it,
// the listener's own (Listener) and net/http's (ServeHTTP, for an upgrade
// on a kept-alive connection), with one check (Handshake.Check).
type Server struct {
	Handshake
	// WriteTimeout bounds the write of the upgrade's answer;
	// ReadHeaderTimeout the wait for a request head (Listener).
	WriteTimeout, ReadHeaderTimeout time.Duration
	// Start starts the session of an upgraded connection.
	Start func(Upgraded)
	// StartPolling starts a long-polling session sid (it calls
	// NewPolling with the session's Handler and WebSocket).
	StartPolling func(sid, token string) *Polling
	// UpgradeFailed is told of an upgrade that failed after the checks
	// (a malformed WebSocket handshake, a write error); the answer, if
	// any, was written.
	UpgradeFailed func(err error, remote string)
	// AcceptFailed is told of each failed accept (Listener), and the
	// wait before the next; AcceptRecovered of the first accept after.
	AcceptFailed    func(err error, retry time.Duration)
	AcceptRecovered func()
	// Deflate: accept a client's offer of permessage-deflate (without
	// context takeover).
	Deflate bool

	letGo atomic.Bool // LetGo was called
	// The polling sessions by sid: polls.mu is a leaf.
	polls struct {
		mu   sync.Mutex
		byID map[string]*Polling
	}
}

// NewPolling makes and registers the polling transport of session sid,
// whose Handler is h and whose WebSocket (for the upgrade) is ws.
func (srv *Server) NewPolling(sid string, h Handler, ws *WebSocket, opts *Options) *Polling {
	p := &Polling{srv: srv, sid: sid, h: h, ws: ws, opts: opts, wake: make(chan struct{}, 1)}
	srv.polls.mu.Lock()
	if srv.polls.byID == nil {
		srv.polls.byID = map[string]*Polling{}
	}
	srv.polls.byID[sid] = p
	srv.polls.mu.Unlock()
	return p
}

func (srv *Server) polling(sid string) *Polling {
	srv.polls.mu.Lock()
	defer srv.polls.mu.Unlock()
	return srv.polls.byID[sid]
}

// forget drops p from the registry once its last packets were taken (or
// nobody came for them).
func (srv *Server) forget(p *Polling) {
	srv.polls.mu.Lock()
	if srv.polls.byID[p.sid] == p {
		delete(srv.polls.byID, p.sid)
	}
	srv.polls.mu.Unlock()
	p.mu.Lock()
	if p.closeAt != nil {
		p.closeAt.Stop()
	}
	p.mu.Unlock()
}

// LetGo answers every waiting long-poll now (a noop) and every later one
// at once, for a server shutting down: net/http's Shutdown waits for
// active requests, and a long-poll would hold it until its next packet.
// The clients poll again, find no server, and reconnect elsewhere.
func (srv *Server) LetGo() {
	srv.letGo.Store(true)
	srv.polls.mu.Lock()
	polls := make([]*Polling, 0, len(srv.polls.byID))
	for _, p := range srv.polls.byID {
		polls = append(polls, p)
	}
	srv.polls.mu.Unlock()
	for _, p := range polls {
		p.signal()
	}
}

// Waiting counts the long-polls waiting (tests, introspection).
func (srv *Server) Waiting() int {
	srv.polls.mu.Lock()
	polls := make([]*Polling, 0, len(srv.polls.byID))
	for _, p := range srv.polls.byID {
		polls = append(polls, p)
	}
	srv.polls.mu.Unlock()
	n := 0
	for _, p := range polls {
		p.mu.Lock()
		if p.waiting {
			n++
		}
		p.mu.Unlock()
	}
	return n
}

// Polled counts the polling sessions registered (tests, introspection).
func (srv *Server) Polled() int {
	srv.polls.mu.Lock()
	defer srv.polls.mu.Unlock()
	return len(srv.polls.byID)
}

// unknownSID answers a request for a session that is not (or no longer)
// here, as the reference server does; the client opens a new one.
func unknownSID(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte(`{"code":1,"message":"Session ID unknown"}`))
}

// Upgraded is a connection upgraded to a WebSocket.
type Upgraded struct {
	Conn  net.Conn
	Extra []byte // what the client sent after its request, read already
	Token string // from the request (Check)
	// Open is the session's open packet; Opened: it went out with the 101.
	Open   []byte
	Opened bool
	// Deflate: the client negotiated permessage-deflate.
	Deflate bool
}

// ServeHTTP serves /socket.io/: long-polling (transport=polling: a GET
// without sid opens, later GETs poll, POSTs carry packets), and the
// upgrade to a WebSocket (transport=websocket, a new session, or with the
// sid of a polling one). Everything that can be refused is refused with a
// plain HTTP status before the upgrade: once upgraded, a client only
// understands frames.
func (srv *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := Request{
		EIO: q.Get("EIO"), Transport: q.Get("transport"), SID: q.Get("sid"), Token: q.Get("token"),
		Origin: r.Header.Get("Origin"), Authorization: r.Header.Get("Authorization"), Remote: r.RemoteAddr,
	}
	token, refused := srv.Check(req)
	if refused != nil {
		http.Error(w, refused.Reason, refused.Status)
		return
	}
	if req.Transport == "polling" {
		srv.servePolling(w, r, req, token)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "a WebSocket opens with a GET", http.StatusMethodNotAllowed)
		return
	}
	var p *Polling
	if req.SID != "" {
		if p = srv.polling(req.SID); p == nil || !p.claim() {
			unknownSID(w)
			return
		}
	}
	var open []byte
	if p == nil {
		open = srv.OpenFrame()
	}
	ow := &openingWriter{ResponseWriter: w, open: open}
	neg := newNegotiator(srv.Deflate)
	conn, rw, _, err := (&ws.HTTPUpgrader{Timeout: srv.WriteTimeout, Negotiate: neg.hook()}).Upgrade(r, ow)
	if err != nil {
		// The upgrader has answered with an HTTP error already.
		srv.UpgradeFailed(err, r.RemoteAddr)
		return
	}
	_ = conn.SetDeadline(time.Time{})
	var extra []byte
	if rw != nil && rw.Reader.Buffered() > 0 {
		b, _ := rw.Reader.Peek(rw.Reader.Buffered())
		extra = bytes.Clone(b)
	}
	u := Upgraded{Conn: conn, Extra: extra, Token: token, Open: open, Opened: ow.opened, Deflate: neg.accepted()}
	if p != nil {
		p.startProbe(u)
		return
	}
	srv.Start(u)
}

// servePolling serves a long-polling request: the open, a GET, a POST.
func (srv *Server) servePolling(w http.ResponseWriter, r *http.Request, req Request, token string) {
	if req.Origin != "" {
		// Allowed (Check): a page of another origin reads the answers.
		w.Header().Set("Access-Control-Allow-Origin", req.Origin)
		w.Header().Set("Access-Control-Allow-Credentials", "true")
	}
	if req.SID == "" {
		if r.Method != http.MethodGet {
			unknownSID(w)
			return
		}
		sid := srv.NewID()
		srv.StartPolling(sid, token)
		pollHeaders(w)
		_, _ = w.Write(srv.openPacket(sid, []string{"websocket"}))
		return
	}
	p := srv.polling(req.SID)
	if p == nil {
		unknownSID(w)
		return
	}
	switch r.Method {
	case http.MethodGet:
		p.serveGet(w, r)
	case http.MethodPost:
		p.servePost(w, r)
	default:
		http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
	}
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
