package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// listenerGateway runs a gateway, whose sockets are served from
// SocketIOListener and /healthz from net/http behind it.
func listenerGateway(t *testing.T) (*Gateway, string) {
	t.Helper()
	tg := newEnv(t).startGateway(func(c *Config) { c.AllowedOrigins = []string{"https://app.example"} })
	return tg.Gateway, strings.TrimPrefix(tg.url, "http://")
}

// rawRequest sends head on a fresh connection and returns the status line
// and the reader positioned after the response head.
func rawRequest(t *testing.T, addr, head string) (string, *bufio.Reader, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = io.WriteString(c, head)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	require.NoError(t, err)
	for {
		l, err := br.ReadString('\n')
		require.NoError(t, err)
		if l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(status), br, c
}

const upgradeHeaders = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

func TestSocketIOListener(t *testing.T) {
	g, addr := listenerGateway(t)

	// Anything else is net/http's, from its first byte.
	resp, err := http.Get("http://" + addr + "/healthz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "ok\n", string(body))

	// Refusals before the upgrade, with engineio.Server.ServeHTTP's statuses (one check, Handshake.Check).
	for _, tc := range []struct{ path, hdr, status string }{
		{"/socket.io/?EIO=3&transport=websocket", upgradeHeaders, "400"},
		{"/socket.io/?EIO=4&transport=flashsocket", upgradeHeaders, "400"},
		{"/socket.io/?EIO=4&transport=websocket", upgradeHeaders + "Origin: https://evil.example\r\n", "403"},
		{"/socket.io/?EIO=4&transport=websocket", "Host: x\r\n", "400"}, // not an upgrade
	} {
		status, _, _ := rawRequest(t, addr, "GET "+tc.path+" HTTP/1.1\r\n"+tc.hdr+"\r\n")
		require.Contains(t, status, " "+tc.status+" ", tc.path+" "+tc.hdr)
	}

	// An upgrade: the 101, the open packet with it, and a working socket,
	// even when the client sent its CONNECT without waiting for the 101.
	connect := ws.MustCompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(`40{"token":"` + token(t, "u1", time.Hour) + `"}`))))
	status, br, c := rawRequest(t, addr, "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"+upgradeHeaders+
		"Origin: https://app.example\r\n\r\n"+string(connect))
	require.Contains(t, status, " 101 ")
	rw := struct {
		io.Reader
		io.Writer
	}{br, c}
	msg, err := wsutil.ReadServerText(rw)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(msg), `0{"sid":"`), string(msg))
	msg, err = wsutil.ReadServerText(rw)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(string(msg), `40{"sid":"`), string(msg))

	// Draining: refused with 503.
	g.draining.Store(true)
	status, _, _ = rawRequest(t, addr, "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"+upgradeHeaders+"\r\n")
	require.Contains(t, status, " 503 ")
}

// TestSocketIOListenerStops: closing the listener ends Serve.
func TestSocketIOListenerStops(t *testing.T) {
	g, err := New(Config{NATSURL: newEnv(t).srv.ClientURL(), JWTSecret: testSecret, Logger: zerolog.Nop()})
	require.NoError(t, err)
	t.Cleanup(g.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: http.NotFoundHandler()}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(g.SocketIOListener(ln)) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, srv.Shutdown(ctx))
	select {
	case err := <-done:
		require.ErrorIs(t, err, http.ErrServerClosed)
	case <-ctx.Done():
		t.Fatal("Serve did not return")
	}
}
