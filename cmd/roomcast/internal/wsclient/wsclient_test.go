package wsclient

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/stretchr/testify/require"
)

// pipe is a Conn over an in-memory pipe, and the server's end.
func pipe(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	cli, srv := net.Pipe()
	t.Cleanup(func() { cli.Close(); srv.Close() })
	c := Over(cli)
	return &c, srv
}

// TestReadMessage: a ping between two fragments is answered with its
// payload and the fragments come back as one message; a client frame goes
// out masked and reads back as sent.
func TestReadMessage(t *testing.T) {
	c, srv := pipe(t)
	pong := make(chan []byte, 1)
	go func() {
		_ = ws.WriteHeader(srv, ws.Header{OpCode: ws.OpText, Length: 3})
		_, _ = srv.Write([]byte("hel"))
		_ = wsutil.WriteServerMessage(srv, ws.OpPing, []byte("p1"))
		h, _ := ws.ReadHeader(srv)
		p := make([]byte, h.Length)
		_, _ = srv.Read(p)
		ws.Cipher(p, h.Mask, 0)
		pong <- p
		_ = ws.WriteHeader(srv, ws.Header{Fin: true, OpCode: ws.OpContinuation, Length: 2})
		_, _ = srv.Write([]byte("lo"))
		b, _ := wsutil.ReadClientText(srv)
		pong <- b
	}()
	msg, err := c.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, "hello", string(msg))
	require.Equal(t, "p1", string(<-pong))
	require.NoError(t, c.Write([]byte("back")))
	require.Equal(t, "back", string(<-pong))
}

// TestReadMessageClosed: a close frame is answered and read as ErrClosed
// with its code and reason.
func TestReadMessageClosed(t *testing.T) {
	c, srv := pipe(t)
	answered := make(chan ws.OpCode, 1)
	go func() {
		_ = wsutil.WriteServerMessage(srv, ws.OpClose, ws.NewCloseFrameBody(3500, "invalid token"))
		h, _ := ws.ReadHeader(srv)
		answered <- h.OpCode
	}()
	_, err := c.ReadMessage()
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorContains(t, err, "3500 invalid token")
	require.Equal(t, ws.OpClose, <-answered)
}

// TestReadMessageTooLong: a frame declared over MaxFrame is refused before
// anything is allocated for it.
func TestReadMessageTooLong(t *testing.T) {
	c, srv := pipe(t)
	go func() { _ = ws.WriteHeader(srv, ws.Header{Fin: true, OpCode: ws.OpText, Length: MaxFrame + 1}) }()
	_, err := c.ReadMessage()
	require.ErrorContains(t, err, "over the 1048576 limit")
}

// TestWriteFrames: the frames built go out in one write, and a failed
// build writes nothing.
func TestWriteFrames(t *testing.T) {
	c, srv := pipe(t)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 64)
		n, _ := srv.Read(b)
		got <- b[:n]
	}()
	require.ErrorContains(t, c.WriteFrames(func(b []byte) ([]byte, error) {
		return AppendFrame(b, ws.OpText, []byte("no")), net.ErrClosed
	}), "closed")
	require.NoError(t, c.WriteFrames(func(b []byte) ([]byte, error) {
		b = AppendFrame(b, ws.OpText, []byte("a"))
		return AppendFrame(b, ws.OpText, []byte("bc")), nil
	}))
	b := <-got
	require.Len(t, b, 2*6+3, "two masked frames (2-byte header, 4-byte mask) in one read: %q", b)
	r := struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(b), io.Discard}
	for _, want := range []string{"a", "bc"} {
		m, err := wsutil.ReadClientText(r)
		require.NoError(t, err)
		require.Equal(t, want, string(m))
	}
}

func TestURL(t *testing.T) {
	require.Equal(t, "ws://127.0.0.1:8000/p?q=1", URL("http://127.0.0.1:8000/", "/p?q=1"))
	require.Equal(t, "ws://h:1/p", URL("ws://h:1", "/p"))
}
