// Package wsclient is the WebSocket underneath the load tool's two protocol
// clients, sioclient (Socket.IO) and cfclient (Centrifugo): the dial, the
// frame reader and the frame writer they shared line for line.
//
// It is lean on purpose, since thousands of sockets share the tool's process
// and its CPU competes with the server's: one goroutine owns a connection and
// does every read and write on it (pongs included, so writes never
// interleave), a 1 KiB read buffer, buffers reused from frame to frame.
package wsclient

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// MaxFrame bounds a message the client accepts: gobwas/ws would otherwise
// allocate whatever length the server declares.
const MaxFrame = 1 << 20

// readBufSize is each connection's bufio.Reader size: one broadcast of the
// benchmark (~300 bytes) fits, and a few coalesced ones too.
const readBufSize = 1024

// ErrClosed is the server closing the WebSocket; ReadMessage wraps it with
// the close frame's code and reason.
var ErrClosed = errors.New("server closed the socket")

// URL is the WebSocket URL of path on a server at base (http://host:port
// or ws://host:port, a trailing slash or not).
func URL(base, path string) string {
	base = strings.TrimSuffix(base, "/")
	if rest, ok := strings.CutPrefix(base, "http://"); ok {
		base = "ws://" + rest
	}
	return base + path
}

// Conn is one client WebSocket. Its zero value is unconnected; Dial connects
// it. A protocol client holds it by value, so a socket stays one allocation.
type Conn struct {
	// Deflate, set before Dial, offers permessage-deflate without context
	// takeover; after Dial it says whether the server accepted. The client
	// inflates what arrives compressed and sends its own frames plain (the
	// extension lets each side choose per message).
	Deflate bool
	// Stamped, set before Dial, has the kernel stamp what arrives (Linux's
	// SO_TIMESTAMPNS; elsewhere nothing): Arrival then says when the bytes
	// of the message last read reached the socket.
	Stamped bool

	conn  net.Conn
	stamp *stamped // nil unless Stamped took
	br    *bufio.Reader
	buf   []byte // the current message, reused
	ibuf  []byte // the current message inflated, reused
	wbuf  []byte // the current outgoing frames, reused
}

// bytesRead counts every byte the process's client connections read from
// the network (WebSocket and, through CountReads, long-polling), headers
// and control frames included: the load tool's "bytes per delivery".
var bytesRead atomic.Uint64

// BytesRead is how many bytes the process's client connections have read.
func BytesRead() uint64 { return bytesRead.Load() }

// CountReads wraps conn so that what it reads is counted in BytesRead.
func CountReads(conn net.Conn) net.Conn { return counted{conn} }

type counted struct{ net.Conn }

func (c counted) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	bytesRead.Add(uint64(n))
	return n, err
}

// deflateOffer is the offer of Deflate: no context takeover either way, so
// that the server may compress a broadcast once for every socket and the
// client keeps no window between messages.
var deflateOffer = []httphead.Option{wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}.Option()}

// Dial opens a WebSocket to url from source (nil for any) and runs
// handshake, the protocol's own opening, on it. The dial and the handshake
// together are bounded by timeout (10 s when zero) and by ctx; after them
// the connection has no deadline. A failed handshake closes the connection.
func (c *Conn) Dial(ctx context.Context, url string, source net.IP, timeout time.Duration, handshake func() error) error {
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := ws.Dialer{ReadBufferSize: readBufSize, WriteBufferSize: readBufSize}
	// No TCP keepalive: the protocols' pings watch the connection, and
	// turning keepalive on costs four setsockopt calls per dial, which a
	// reconnect storm of thousands of sockets pays in the tool's CPU.
	nd := net.Dialer{KeepAlive: -1}
	if source != nil {
		nd.LocalAddr = &net.TCPAddr{IP: source}
	}
	d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if c.Stamped {
			sc, err := stampArrivals(conn)
			if err != nil {
				_ = conn.Close()
				return nil, err
			}
			if sc != nil {
				c.stamp = sc
				return sc, nil
			}
		}
		return CountReads(conn), nil
	}
	if c.Deflate {
		d.Extensions = deflateOffer
	}
	conn, hbr, hs, err := d.Dial(ctx, url)
	if err != nil {
		return err
	}
	c.Deflate = c.Deflate && len(hs.Extensions) > 0
	var r io.Reader = conn
	if hbr != nil {
		// The server's first frames arrived with the 101 response: keep
		// them, give the handshake buffer back.
		extra, _ := hbr.Peek(hbr.Buffered())
		r = io.MultiReader(bytes.NewReader(bytes.Clone(extra)), conn)
		ws.PutReader(hbr)
	}
	c.conn, c.br = conn, bufio.NewReaderSize(r, readBufSize)
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := handshake(); err != nil {
		_ = conn.Close()
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	return nil
}

// Arrival is when the latest bytes read so far reached the socket, as the
// kernel stamped them (Unix ns). A message ReadMessage just returned came
// at that moment or before it; not when this process got to read it. 0
// without Stamped, or before a stamped read.
func (c *Conn) Arrival() int64 {
	if c.stamp == nil {
		return 0
	}
	return c.stamp.arrival()
}

// Over is a Conn on a connection already open past the WebSocket
// handshake (a test's net.Pipe).
func Over(conn net.Conn) Conn {
	return Conn{conn: conn, br: bufio.NewReaderSize(conn, readBufSize)}
}

// ReadMessage reads one WebSocket message (joining fragments), answering
// pings and skipping pongs on the way. The slice is valid until the next
// call. A close frame is answered and returned as ErrClosed.
func (c *Conn) ReadMessage() ([]byte, error) {
	c.buf = c.buf[:0]
	compressed := false
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return nil, err
		}
		if h.Length > MaxFrame || int64(len(c.buf))+h.Length > MaxFrame {
			return nil, fmt.Errorf("frame of %d bytes is over the %d limit", h.Length, MaxFrame)
		}
		n := int(h.Length)
		start := len(c.buf)
		if cap(c.buf) < start+n {
			nb := make([]byte, start, max(start+n, 2*cap(c.buf), 512))
			copy(nb, c.buf)
			c.buf = nb
		}
		c.buf = c.buf[:start+n]
		if _, err := io.ReadFull(c.br, c.buf[start:]); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(c.buf[start:], h.Mask, 0)
		}
		if h.Rsv1() && !h.OpCode.IsControl() {
			if !c.Deflate {
				return nil, errors.New("a compressed frame on a socket without permessage-deflate")
			}
			compressed = true
		}
		switch h.OpCode {
		case ws.OpPing:
			if err := c.WriteFrame(ws.OpPong, c.buf[start:]); err != nil {
				return nil, err
			}
			c.buf = c.buf[:start]
			continue
		case ws.OpPong:
			c.buf = c.buf[:start]
			continue
		case ws.OpClose:
			reason := closeReason(c.buf[start:])
			_ = c.WriteFrame(ws.OpClose, nil)
			return nil, fmt.Errorf("%w: %s", ErrClosed, reason)
		}
		if h.Fin {
			if compressed {
				return c.inflate()
			}
			return c.buf, nil
		}
	}
}

// deflateTail ends every message's deflate stream (RFC 7692 7.2.2: the
// sender took it off).
var deflateTail = []byte{0, 0, 0xff, 0xff}

// inflaters are flate readers shared by the process's sockets: with no
// context takeover a socket keeps nothing between messages, so one reader
// per message in flight is enough.
var inflaters sync.Pool

// inflate decompresses the message in c.buf into c.ibuf, at most MaxFrame.
func (c *Conn) inflate() ([]byte, error) {
	src := io.MultiReader(bytes.NewReader(c.buf), bytes.NewReader(deflateTail))
	fr, _ := inflaters.Get().(io.ReadCloser)
	if fr == nil {
		fr = flate.NewReader(src)
	} else if err := fr.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, err
	}
	defer inflaters.Put(fr)
	out := bytes.NewBuffer(c.ibuf[:0])
	n, err := out.ReadFrom(io.LimitReader(fr, MaxFrame+1))
	c.ibuf = out.Bytes()
	// The stream has no final block: running out of input is its end.
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("inflate: %w", err)
	}
	if n > MaxFrame {
		return nil, fmt.Errorf("inflated message over the %d limit", MaxFrame)
	}
	return c.ibuf, nil
}

// closeReason reads a close frame's payload: a 2-byte code and a reason
// (e.g. Centrifugo's 3500 "invalid token").
func closeReason(p []byte) string {
	if len(p) < 2 {
		return "no code"
	}
	return fmt.Sprintf("%d %s", int(p[0])<<8|int(p[1]), p[2:])
}

// Write sends p as one masked text frame, in one write.
func (c *Conn) Write(p []byte) error { return c.WriteFrame(ws.OpText, p) }

// WriteFrame sends p as one masked client frame of opcode op, in one write.
func (c *Conn) WriteFrame(op ws.OpCode, p []byte) error {
	c.wbuf = AppendFrame(c.wbuf[:0], op, p)
	_, err := c.conn.Write(c.wbuf)
	return err
}

// WriteFrames sends the frames build appends (with AppendFrame) to an empty
// buffer, in one write; the buffer is kept for the next.
func (c *Conn) WriteFrames(build func(b []byte) ([]byte, error)) error {
	b, err := build(c.wbuf[:0])
	if err != nil {
		return err
	}
	c.wbuf = b
	_, err = c.conn.Write(c.wbuf)
	return err
}

// AppendFrame appends p as one masked client frame of opcode op.
func AppendFrame(b []byte, op ws.OpCode, p []byte) []byte {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	var hb bytes.Buffer
	hb.Grow(ws.MaxHeaderSize)
	_ = ws.WriteHeader(&hb, h) // a bytes.Buffer does not fail
	b = append(b, hb.Bytes()...)
	start := len(b)
	b = append(b, p...)
	ws.Cipher(b[start:], h.Mask, 0)
	return b
}

// Close closes the TCP connection at once, without a goodbye: what a lost
// network looks like to the server.
func (c *Conn) Close() error { return c.conn.Close() }

// SetDeadline sets the read and write deadline of the connection (zero: none).
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }
