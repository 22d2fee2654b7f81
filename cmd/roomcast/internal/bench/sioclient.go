package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

// The load tool's Socket.IO client: Engine.IO v4 / Socket.IO v5 over a
// WebSocket, namespace "/", just what a socket of the benchmark needs. It is
// lean on purpose, since thousands of them share a process and the tool's
// own CPU competes with the server's: one goroutine owns a socket and does
// every read and write on it (pongs included, so writes never interleave),
// a 1 KiB read buffer, no JSON decoding of broadcasts.

// maxFrame bounds a frame the client accepts: gobwas/ws would otherwise
// allocate whatever length the server declares.
const maxFrame = 1 << 20

// readBufSize is each socket's bufio.Reader size: one broadcast of the
// benchmark (~300 bytes) fits, and a few coalesced ones too.
const readBufSize = 1024

var (
	errRefused = errors.New("connect refused")
	errClosed  = errors.New("server closed the socket")
)

// sioConn is one connected, authenticated socket.
type sioConn struct {
	conn  net.Conn
	br    *bufio.Reader
	buf   []byte // the current message, reused
	wbuf  []byte // the current outgoing frame, reused
	ackID int
	SID   string // Socket.IO socket id from the CONNECT reply
}

// dialOptions say where and how a socket connects.
type dialOptions struct {
	URL     string // ws://host:port/socket.io/?EIO=4&transport=websocket
	Token   string
	Client  string // auth.clientId, "" for none
	Source  net.IP // local address to dial from, nil for any
	Timeout time.Duration
}

// socketURL is the Engine.IO WebSocket endpoint of a server at base
// (http://host:port or ws://host:port).
func socketURL(base string) string {
	base = strings.TrimSuffix(base, "/")
	if rest, ok := strings.CutPrefix(base, "http://"); ok {
		base = "ws://" + rest
	}
	return base + "/socket.io/?EIO=4&transport=websocket"
}

// dialSocket opens a WebSocket, reads the Engine.IO open packet, sends the
// Socket.IO CONNECT with auth and waits for the server's answer.
func dialSocket(ctx context.Context, o dialOptions) (*sioConn, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	d := ws.Dialer{ReadBufferSize: readBufSize, WriteBufferSize: readBufSize}
	if o.Source != nil {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: o.Source}}
		d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nd.DialContext(ctx, network, addr)
		}
	}
	conn, hbr, _, err := d.Dial(ctx, o.URL)
	if err != nil {
		return nil, err
	}
	var r io.Reader = conn
	if hbr != nil {
		// The server's first frames arrived with the 101 response: keep
		// them, give the handshake buffer back.
		extra, _ := hbr.Peek(hbr.Buffered())
		r = io.MultiReader(bytes.NewReader(bytes.Clone(extra)), conn)
		ws.PutReader(hbr)
	}
	c := &sioConn{conn: conn, br: bufio.NewReaderSize(r, readBufSize)}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.handshake(o); err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

func (c *sioConn) handshake(o dialOptions) error {
	msg, err := c.next()
	if err != nil {
		return fmt.Errorf("engine.io open: %w", err)
	}
	if len(msg) == 0 || msg[0] != '0' {
		return fmt.Errorf("engine.io open: got %.60q", msg)
	}
	auth := map[string]string{"token": o.Token}
	if o.Client != "" {
		auth["clientId"] = o.Client
	}
	a, _ := json.Marshal(auth)
	if err := c.write(append([]byte("40"), a...)); err != nil {
		return err
	}
	for {
		msg, err := c.next()
		if err != nil {
			return fmt.Errorf("socket.io connect: %w", err)
		}
		switch {
		case bytes.HasPrefix(msg, []byte("40")):
			var r struct {
				SID string `json:"sid"`
			}
			_ = json.Unmarshal(msg[2:], &r)
			c.SID = r.SID
			return nil
		case bytes.HasPrefix(msg, []byte("44")):
			return fmt.Errorf("%w: %s", errRefused, msg[2:])
		case bytes.HasPrefix(msg, []byte("42")):
			// an event before the CONNECT reply cannot be ours; skip it
		default:
			return fmt.Errorf("socket.io connect: unexpected %.60q", msg)
		}
	}
}

// next returns the next Engine.IO message that is not a ping (pings are
// answered here). The slice is valid until the next call.
func (c *sioConn) next() ([]byte, error) {
	for {
		msg, err := c.readMessage()
		if err != nil {
			return nil, err
		}
		switch {
		case len(msg) == 1 && msg[0] == '2':
			if err := c.write([]byte{'3'}); err != nil {
				return nil, err
			}
			continue
		case len(msg) >= 1 && msg[0] == '1':
			return nil, errClosed
		case len(msg) >= 2 && msg[0] == '4' && msg[1] == '1':
			return nil, errClosed
		}
		return msg, nil
	}
}

// readMessage reads one WebSocket text message (joining fragments) into c.buf.
func (c *sioConn) readMessage() ([]byte, error) {
	c.buf = c.buf[:0]
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil {
			return nil, err
		}
		if h.Length > maxFrame || int64(len(c.buf))+h.Length > maxFrame {
			return nil, fmt.Errorf("frame of %d bytes is over the %d limit", h.Length, maxFrame)
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
		switch h.OpCode {
		case ws.OpPing:
			if err := c.writeFrame(ws.OpPong, c.buf[start:]); err != nil {
				return nil, err
			}
			c.buf = c.buf[:start]
			continue
		case ws.OpPong:
			c.buf = c.buf[:start]
			continue
		case ws.OpClose:
			_ = c.writeFrame(ws.OpClose, nil)
			return nil, errClosed
		}
		if h.Fin {
			return c.buf, nil
		}
	}
}

// write sends one Engine.IO message as a masked text frame, in one write.
func (c *sioConn) write(p []byte) error { return c.writeFrame(ws.OpText, p) }

func (c *sioConn) writeFrame(op ws.OpCode, p []byte) error {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(p))}
	var hb bytes.Buffer
	hb.Grow(ws.MaxHeaderSize)
	if err := ws.WriteHeader(&hb, h); err != nil {
		return err
	}
	c.wbuf = append(append(c.wbuf[:0], hb.Bytes()...), p...)
	ws.Cipher(c.wbuf[hb.Len():], h.Mask, 0)
	_, err := c.conn.Write(c.wbuf)
	return err
}

// emitEndpoint sends emit("endpoint", {endpointName, endpointArgs}, ack) and
// returns the ack id to wait for.
func (c *sioConn) emitEndpoint(name string, args any) (int, error) {
	call, err := json.Marshal(struct {
		EndpointName string `json:"endpointName"`
		EndpointArgs any    `json:"endpointArgs"`
	}{name, args})
	if err != nil {
		return 0, err
	}
	id := c.ackID
	c.ackID++
	p := make([]byte, 0, 32+len(call))
	p = append(p, "42"...)
	p = strconv.AppendInt(p, int64(id), 10)
	p = append(p, `["endpoint",`...)
	p = append(p, call...)
	p = append(p, ']')
	return id, c.write(p)
}

// endpointAck is an endpoint's acknowledgement.
type endpointAck struct {
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (a endpointAck) err() error {
	if a.OK {
		return nil
	}
	if a.Error == nil {
		return errors.New("endpoint failed without an error")
	}
	return fmt.Errorf("%s: %s", a.Error.Code, a.Error.Message)
}

// call emits an endpoint and waits for its ack; broadcasts that arrive
// meanwhile go to onOther (which may be nil).
func (c *sioConn) call(name string, args any, onOther func([]byte)) (endpointAck, error) {
	id, err := c.emitEndpoint(name, args)
	if err != nil {
		return endpointAck{}, err
	}
	want := append([]byte("43"), strconv.Itoa(id)...)
	for {
		msg, err := c.next()
		if err != nil {
			return endpointAck{}, fmt.Errorf("%s: %w", name, err)
		}
		if bytes.HasPrefix(msg, want) && len(msg) > len(want) && msg[len(want)] == '[' {
			var args []endpointAck
			if err := json.Unmarshal(msg[len(want):], &args); err != nil || len(args) != 1 {
				return endpointAck{}, fmt.Errorf("%s: bad ack %.80q", name, msg)
			}
			return args[0], args[0].err()
		}
		if onOther != nil {
			onOther(msg)
		}
	}
}

// Close closes the TCP connection at once, without a goodbye: what a lost
// network looks like to the server.
func (c *sioConn) Close() error { return c.conn.Close() }

// broadcastFields are what the benchmark reads from a broadcast frame.
type broadcastFields struct {
	ts, step       int64
	seq, prevSeq   int64
	hasTS, hasSeqs bool
}

// parseBroadcast picks the benchmark's fields out of a
// 42["broadcast",{…}] message by searching for their keys, without decoding
// the JSON: the client's CPU is the tool's limit at high rates.
func parseBroadcast(msg []byte) (broadcastFields, bool) {
	var f broadcastFields
	if !bytes.HasPrefix(msg, []byte(`42["broadcast",`)) {
		return f, false
	}
	var ok1, ok2 bool
	f.ts, f.hasTS = intAfter(msg, keyTS)
	f.step, _ = intAfter(msg, keyStep)
	f.seq, ok1 = intAfter(msg, keySeq)
	f.prevSeq, ok2 = intAfter(msg, keyPrevSeq)
	f.hasSeqs = ok1 && ok2
	return f, true
}

var (
	keyTS      = []byte(`"benchTs":`)
	keyStep    = []byte(`"benchStep":`)
	keySeq     = []byte(`"seq":`)
	keyPrevSeq = []byte(`"prevSeq":`)
)

// intAfter parses the non-negative integer that follows the last occurrence
// of key in b.
func intAfter(b, key []byte) (int64, bool) {
	i := bytes.LastIndex(b, key)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	var v int64
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		d := int64(b[n] - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, false // out of range: not one of ours
		}
		v = v*10 + d
		n++
	}
	return v, n > 0
}
