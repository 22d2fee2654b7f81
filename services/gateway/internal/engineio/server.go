package engineio

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
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
	// UpgradeFailed is told of an upgrade that failed after the checks
	// (a malformed WebSocket handshake, a write error); the answer, if
	// any, was written.
	UpgradeFailed func(err error, remote string)
	// AcceptFailed is told of each failed accept (Listener), and the
	// wait before the next; AcceptRecovered of the first accept after.
	AcceptFailed    func(err error, retry time.Duration)
	AcceptRecovered func()
}

// Upgraded is a connection upgraded to a WebSocket.
type Upgraded struct {
	Conn  net.Conn
	Extra []byte // what the client sent after its request, read already
	Token string // from the request (Check)
	// Open is the session's open packet; Opened: it went out with the 101.
	Open   []byte
	Opened bool
}

// ServeHTTP upgrades /socket.io/?EIO=4&transport=websocket. Everything
// that can be refused is refused with a plain HTTP status before the
// upgrade: once upgraded, a client only understands frames.
func (srv *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	token, refused := srv.Check(Request{
		EIO: q.Get("EIO"), Transport: q.Get("transport"), Token: q.Get("token"),
		Origin: r.Header.Get("Origin"), Authorization: r.Header.Get("Authorization"), Remote: r.RemoteAddr,
	})
	if refused != nil {
		http.Error(w, refused.Reason, refused.Status)
		return
	}
	open := srv.OpenFrame()
	ow := &openingWriter{ResponseWriter: w, open: open}
	conn, rw, _, err := (&ws.HTTPUpgrader{Timeout: srv.WriteTimeout}).Upgrade(r, ow)
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
	srv.Start(Upgraded{Conn: conn, Extra: extra, Token: token, Open: open, Opened: ow.opened})
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
