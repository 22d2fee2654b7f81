package gateway

// Security cases: each TestSecurity… function names the attack it tries
// and what must happen, against a real gateway and NATS over real
// sockets. Several engineers add cases here: put yours under a header
// comment naming your item, so that rebases stay simple.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// rawSocket is an upgraded WebSocket the test writes arbitrary bytes to
// and reads the server's frames from, close frames included.
type rawSocket struct {
	t    *testing.T
	conn net.Conn
	r    io.Reader
}

// dialRaw upgrades a socket and reads the Engine.IO open packet.
func dialRaw(t *testing.T, tg *testGateway) *rawSocket {
	t.Helper()
	d := ws.Dialer{Timeout: 5 * time.Second}
	conn, br, _, err := d.Dial(context.Background(), "ws"+strings.TrimPrefix(tg.url, "http")+wsPath)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	rs := &rawSocket{t: t, conn: conn, r: conn}
	if br != nil {
		rs.r = io.MultiReader(br, conn)
	}
	require.True(t, strings.HasPrefix(rs.text(), "0{"), "open packet")
	return rs
}

// connectRaw is dialRaw plus a CONNECT as user u.
func connectRaw(t *testing.T, tg *testGateway, u string) *rawSocket {
	t.Helper()
	rs := dialRaw(t, tg)
	rs.sendText(`40{"token":"` + token(t, u, time.Hour) + `"}`)
	require.True(t, strings.HasPrefix(rs.text(), `40{"sid":"`))
	return rs
}

// write sends raw bytes (a frame the test built itself).
func (rs *rawSocket) write(b []byte) {
	rs.t.Helper()
	_ = rs.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := rs.conn.Write(b)
	require.NoError(rs.t, err)
}

// frame sends one masked frame.
func (rs *rawSocket) frame(f ws.Frame) {
	rs.t.Helper()
	rs.write(ws.MustCompileFrame(ws.MaskFrame(f)))
}

func (rs *rawSocket) sendText(s string) { rs.frame(ws.NewTextFrame([]byte(s))) }

// text reads the next text frame (pings answered on the way).
func (rs *rawSocket) text() string {
	rs.t.Helper()
	for {
		f, err := rs.read(5 * time.Second)
		require.NoError(rs.t, err)
		switch f.Header.OpCode {
		case ws.OpText:
			if string(f.Payload) == "2" {
				rs.sendText("3")
				continue
			}
			return string(f.Payload)
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			rs.t.Fatalf("closed (%d %q) while waiting for a text frame", code, reason)
		}
	}
}

func (rs *rawSocket) read(d time.Duration) (ws.Frame, error) {
	_ = rs.conn.SetReadDeadline(time.Now().Add(d))
	h, err := ws.ReadHeader(rs.r)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length > 16<<20 {
		return ws.Frame{}, errors.New("server frame over 16 MiB")
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(rs.r, p); err != nil {
		return ws.Frame{}, err
	}
	return ws.Frame{Header: h, Payload: p}, nil
}

// closed reads until the server's close frame and returns its code and
// reason, then checks the connection ends. A connection cut without a close
// frame fails the test: the client would not know why.
func (rs *rawSocket) closed() (ws.StatusCode, string) {
	rs.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := rs.read(time.Until(deadline))
		require.NoError(rs.t, err, "no close frame: the connection ended without one")
		if f.Header.OpCode != ws.OpClose {
			continue
		}
		code, reason := ws.ParseCloseFrameData(f.Payload)
		_, err = rs.read(time.Until(deadline))
		require.Error(rs.t, err, "the connection stays open after the close frame")
		var ne net.Error
		require.False(rs.t, errors.As(err, &ne) && ne.Timeout(), "the connection stays open after the close frame")
		return code, reason
	}
}

// cut waits for the connection to end, close frame or not.
func (rs *rawSocket) cut(within time.Duration) {
	rs.t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, err := rs.read(time.Until(deadline))
		if err == nil {
			continue
		}
		var ne net.Error
		require.False(rs.t, errors.As(err, &ne) && ne.Timeout(), "the connection was not closed within %s", within)
		return
	}
}

// maskedHeader is a client frame header declaring length n (the payload
// is not sent).
func maskedHeader(op ws.OpCode, n uint64) []byte {
	b := []byte{0x80 | byte(op), 0x80 | 127}
	b = binary.BigEndian.AppendUint64(b, n)
	return append(b, 1, 2, 3, 4)
}

// ---- Already defended: frame lengths, slowloris, floods (conn) ----

// TestSecurityOversizedFrame: a frame header that declares more than
// MaxPayload closes the socket with 1009 before its payload is read (the
// test never sends it), and costs the other sockets nothing.
func TestSecurityOversizedFrame(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.MaxPayload = 1024 })
	good := connectUser(t, tg, "u0")
	rs := connectRaw(t, tg, "u1")
	rs.write(maskedHeader(ws.OpText, 1025))
	code, _ := rs.closed()
	require.Equal(t, ws.StatusMessageTooBig, code)
	good.mustOK(proto.EndpointUpdateClient, map[string]any{"isActive": true})
}

// TestSecurityLyingFrameLength: lengths that lie. A 64-bit length with the
// top bit set (2^63 and more, which RFC 6455 forbids, and which would be
// negative as an int64) closes with 1002; 2^62 is refused as too large
// (1009) before anything is read or allocated; a frame that declares less
// than MaxPayload and sends less than it declared is cut at the CONNECT
// deadline. Both read paths (the epoll poller and a reader goroutine).
func TestSecurityLyingFrameLength(t *testing.T) {
	e := newEnv(t)
	for _, readers := range []bool{false, true} {
		t.Run(map[bool]string{false: "poller", true: "reader goroutines"}[readers], func(t *testing.T) {
			tg := e.startGateway(func(c *Config) {
				c.MaxPayload = 1024
				c.ConnectTimeout = 500 * time.Millisecond
				c.ReadGoroutines = readers
			})
			for n, want := range map[uint64]ws.StatusCode{1 << 63: ws.StatusProtocolError, 1<<64 - 1: ws.StatusProtocolError, 1 << 62: ws.StatusMessageTooBig} {
				rs := dialRaw(t, tg)
				rs.write(maskedHeader(ws.OpText, n))
				code, _ := rs.closed()
				require.Equal(t, want, code, "length %d", n)
			}
			rs := dialRaw(t, tg)
			rs.write(append(maskedHeader(ws.OpText, 1000), "40{"...))
			start := time.Now()
			rs.cut(10 * time.Second)
			require.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

// TestSecuritySlowlorisConnect: a client that upgrades and then never sends
// CONNECT (or trickles it) is cut at ConnectTimeout; it does not hold a
// socket forever.
func TestSecuritySlowlorisConnect(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.ConnectTimeout = 300 * time.Millisecond })
	rs := dialRaw(t, tg)
	rs.write([]byte{0x81}) // the first byte of a frame, and nothing more
	start := time.Now()
	rs.cut(10 * time.Second)
	require.Less(t, time.Since(start), 5*time.Second)
}

// TestSecuritySlowlorisHandshake: a client that opens a connection and
// trickles its upgrade request, never finishing the head, is cut at
// HTTPReadHeaderTimeout, and the bytes it sent upgrade nothing.
func TestSecuritySlowlorisHandshake(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.HTTPReadHeaderTimeout = 300 * time.Millisecond })
	c := tcpDial(t, tg)
	_, err := io.WriteString(c, "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n")
	require.NoError(t, err)
	requireCut(t, c, 5*time.Second)
}

// ---- 13.3: plain HTTP connections are not held forever (conn) ----

// TestSecurityIdleKeepAlive: a plain HTTP connection kept alive after a
// request and then left idle is closed at HTTPIdleTimeout (it was held
// forever).
func TestSecurityIdleKeepAlive(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.HTTPIdleTimeout = 300 * time.Millisecond; c.HTTPReadHeaderTimeout = time.Minute })
	c := tcpDial(t, tg)
	_, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.False(t, resp.Close, "the server did not keep the connection alive")
	requireCut(t, c, 5*time.Second)
}

// TestSecuritySlowHeaders: on a kept-alive connection, a second request
// whose head is trickled is cut at HTTPReadHeaderTimeout (net/http's
// ReadHeaderTimeout, counted from its first byte), however long the idle
// timeout.
func TestSecuritySlowHeaders(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.HTTPIdleTimeout = time.Minute; c.HTTPReadHeaderTimeout = 300 * time.Millisecond })
	c := tcpDial(t, tg)
	_, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	resp.Body.Close()
	_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHo")
	require.NoError(t, err)
	requireCut(t, c, 5*time.Second)
}

func tcpDial(t *testing.T, tg *testGateway) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(tg.url, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// requireCut waits for the server to close c, whatever it wrote before.
func requireCut(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection was not closed within %s", within)
}

// TestSecurityCallFlood: a socket that sends endpoint calls as fast as it
// can gets at most RateBurst (plus what the rate refills) answered, the
// rest rate_limited; every call is still answered, and another user's
// socket is served meanwhile.
func TestSecurityCallFlood(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.RateLimit = 1; c.RateBurst = 10 })
	good := connectUser(t, tg, "u0")
	c := connectUser(t, tg, "u1")
	const n = 300
	var b strings.Builder
	for i := range n {
		f := ws.MaskFrame(ws.NewTextFrame([]byte(`42` + strconv.Itoa(i) + `["endpoint",{"endpointName":"updateClient","endpointArgs":{"isActive":true}}]`)))
		b.Write(ws.MustCompileFrame(f))
	}
	c.wmu.Lock()
	_, err := io.WriteString(c.conn, b.String())
	c.wmu.Unlock()
	require.NoError(t, err)
	ok, limited := 0, 0
	for range n {
		select {
		case a := <-c.acks:
			if strings.Contains(a, `"rate_limited"`) {
				limited++
			} else {
				ok++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d calls answered of %d", ok+limited, n)
		}
	}
	require.LessOrEqual(t, ok, 10+30, "answered beyond the budget")
	require.GreaterOrEqual(t, limited, n-40)
	good.mustOK(proto.EndpointUpdateClient, map[string]any{"isActive": true})
}
