package engineio

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// socketIOListener takes the Socket.IO upgrades off net/http. It accepts
// the connections itself, reads each request head into a pooled buffer,
// and upgrades GET /socket.io/… with gobwas/ws's Upgrader (header checks
// as callbacks, no http.Request, no per-connection bufio pair kept by a
// hijack); every other request (health, metrics, pprof) is handed, with the
// bytes already read, to the http.Server that Accepts from it.
//
// In a reconnect storm net/http's share was about a fifth of the gateway's
// CPU (request parsing, the connection goroutine's state, 8 KB of buffers
// per hijacked connection, all garbage a moment later). The checks are
// Handshake.Check, as for ServeHTTP, which still serves an upgrade that
// reaches the mux (a second request on a kept-alive connection).
type socketIOListener struct {
	net.Listener
	srv *Server

	others    chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	err       error // why Accept stopped; set before closed is closed
}

// maxHead is the largest request head the listener reads itself; a bigger
// one goes to net/http, which answers it.
const maxHead = 4096

var headPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, maxHead) }}

// Listener wraps ln: Socket.IO upgrades are served from it directly, and
// the http.Server given the result gets the other requests.
func (srv *Server) Listener(ln net.Listener) net.Listener {
	l := &socketIOListener{Listener: ln, srv: srv, others: make(chan net.Conn), closed: make(chan struct{})}
	go l.acceptLoop()
	return l
}

// acceptLoop accepts until the listener is closed. Any other accept error
// (out of descriptors, EMFILE or ENFILE, above all; ENOBUFS, ENOMEM, a
// firewall's EPERM) is waited out as net/http waits out a temporary one: 5
// ms, doubling to 1 s, and again. Giving up would leave a process that
// looks alive and never accepts again, a socket or a /readyz; an error that
// does not pass is at least counted, logged and shown by /readyz.
func (l *socketIOListener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.stop(err)
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.srv.AcceptFailed(err, delay)
			select {
			case <-time.After(delay):
				continue
			case <-l.closed:
				return
			}
		}
		if delay != 0 {
			delay = 0
			l.srv.AcceptRecovered()
		}
		go l.serve(c)
	}
}

// AcceptErrorLabel names an accept error for a metric.
func AcceptErrorLabel(err error) string {
	for _, e := range []struct {
		errno syscall.Errno
		label string
	}{
		{syscall.EMFILE, "emfile"}, {syscall.ENFILE, "enfile"}, {syscall.ENOBUFS, "enobufs"},
		{syscall.ENOMEM, "enomem"}, {syscall.ECONNABORTED, "econnaborted"}, {syscall.EPERM, "eperm"},
	} {
		if errors.Is(err, e.errno) {
			return e.label
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other"
}

func (l *socketIOListener) stop(err error) {
	l.closeOnce.Do(func() {
		l.err = err
		close(l.closed)
	})
}

// Accept returns the next connection that is not a Socket.IO upgrade.
func (l *socketIOListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.others:
		return c, nil
	case <-l.closed:
		return nil, l.err
	}
}

func (l *socketIOListener) Close() error {
	err := l.Listener.Close()
	l.stop(net.ErrClosed)
	return err
}

// serve reads c's request head and upgrades it, or hands c to net/http.
func (l *socketIOListener) serve(c net.Conn) {
	// A client may take HTTPReadHeaderTimeout to send its request head, as
	// http.Server's ReadHeaderTimeout allows each further request.
	_ = c.SetReadDeadline(time.Now().Add(l.srv.ReadHeaderTimeout))
	br := headPool.Get().(*bufio.Reader)
	br.Reset(c)
	head, err := readHead(br)
	switch {
	case errors.Is(err, errHeadTooLarge), err == nil && !isSocketIORequest(head):
		// net/http reads it again from the start, and answers it
		select {
		case l.others <- &replayConn{Conn: c, r: br}:
		case <-l.closed:
			_ = c.Close()
		}
		return // br is the connection's now, not the pool's
	case err != nil:
		_ = c.Close()
	default:
		l.srv.upgrade(c, br, head)
	}
	br.Reset(nil)
	headPool.Put(br)
}

var errHeadTooLarge = errors.New("request head too large")

// readHead returns the request head (through its blank line), buffered in
// br and not consumed.
func readHead(br *bufio.Reader) ([]byte, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			return buf[:i+4], nil
		}
		if br.Buffered() == br.Size() {
			return nil, errHeadTooLarge
		}
		if _, err := br.Peek(br.Buffered() + 1); err != nil {
			return nil, err
		}
	}
}

var socketIOPrefix = []byte("GET /socket.io/")

// isSocketIORequest: a WebSocket opening (long-polling goes to net/http,
// which keeps its connections alive for the next poll).
func isSocketIORequest(head []byte) bool {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	return bytes.HasPrefix(line, socketIOPrefix) && bytes.Contains(line, []byte("transport=websocket"))
}

// upgrade upgrades the request whose head is buffered in br, with the
// checks of Handshake.Check, and starts the session.
func (srv *Server) upgrade(c net.Conn, br *bufio.Reader, head []byte) {
	r := Request{Remote: c.RemoteAddr().String()}
	var bearer bool
	var p *Polling // the session an upgrade is for
	var open []byte
	w := &openingConn{Conn: c}
	neg := newNegotiator(srv.Deflate)
	up := ws.Upgrader{
		Negotiate: neg.hook(),
		OnRequest: func(uri []byte) error {
			q := queryOf(uri)
			r.EIO, r.Transport, r.Token = queryValue(q, "EIO"), queryValue(q, "transport"), queryValue(q, "token")
			r.SID = queryValue(q, "sid")
			return nil
		},
		OnHeader: func(key, value []byte) error {
			switch {
			case r.Origin == "" && len(value) > 0 && asciiEqualFold(key, "Origin"):
				r.Origin = string(value)
			case !bearer && asciiEqualFold(key, "Authorization"):
				bearer = true
				r.Authorization = string(value)
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			token, refused := srv.Check(r)
			if refused != nil {
				return nil, ws.RejectConnectionError(ws.RejectionStatus(refused.Status), ws.RejectionReason(refused.Reason))
			}
			r.Token = token
			if r.SID != "" {
				if p = srv.polling(r.SID); p == nil || !p.claim() {
					return nil, ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest), ws.RejectionReason("Session ID unknown"))
				}
			} else {
				open = srv.OpenFrame()
				w.open = open
			}
			return nil, nil
		},
	}
	_ = c.SetWriteDeadline(time.Now().Add(srv.WriteTimeout))
	// The upgrader reads the head alone: bytes after it (a client that did
	// not wait for the 101) stay in br for the socket.
	_, err := up.Upgrade(struct {
		*bytes.Reader
		*openingConn
	}{bytes.NewReader(head), w})
	_, _ = br.Discard(len(head))
	if err != nil {
		srv.UpgradeFailed(err, r.Remote)
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	var extra []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		extra = bytes.Clone(b)
	}
	u := Upgraded{Conn: c, Extra: extra, Token: r.Token, Open: open, Opened: w.opened, Deflate: neg.accepted()}
	if p != nil {
		p.startProbe(u)
		return
	}
	srv.Start(u)
}

// openingConn writes the upgrader's 101 response with the Engine.IO open
// packet after it, in one write; any other response unchanged.
type openingConn struct {
	net.Conn
	open   []byte
	opened bool
}

func (o *openingConn) Write(p []byte) (int, error) {
	if o.opened || o.open == nil || !bytes.HasPrefix(p, switchingProtocols) || !bytes.HasSuffix(p, []byte("\r\n\r\n")) {
		return o.Conn.Write(p)
	}
	b := make([]byte, 0, len(p)+len(o.open))
	b = append(append(b, p...), o.open...)
	n, err := o.Conn.Write(b)
	o.opened = err == nil && n == len(b)
	return min(n, len(p)), err
}

// replayConn reads what was buffered in r before the connection itself.
type replayConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.r != nil {
		if c.r.Buffered() > 0 {
			return c.r.Read(p)
		}
		c.r = nil
	}
	return c.Conn.Read(p)
}
