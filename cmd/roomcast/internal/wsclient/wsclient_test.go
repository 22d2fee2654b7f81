package wsclient

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
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

// deflateServer serves one WebSocket on a real listener: it negotiates
// permessage-deflate when negotiate is set (gobwas/ws's wsflate, as the
// gateway does) and then runs serve on the connection.
func deflateServer(t *testing.T, negotiate bool, serve func(conn net.Conn, accepted bool)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		ext := wsflate.Extension{Parameters: wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}}
		u := ws.Upgrader{}
		if negotiate {
			u.Negotiate = ext.Negotiate
		}
		if _, err := u.Upgrade(conn); err != nil {
			return
		}
		_, accepted := ext.Accepted()
		serve(conn, accepted)
	}()
	return "ws://" + ln.Addr().String() + "/"
}

// writeCompressed sends p as one compressed text message.
func writeCompressed(conn net.Conn, p []byte) error {
	f, err := wsflate.CompressFrame(ws.NewTextFrame(p))
	if err != nil {
		return err
	}
	return ws.WriteFrame(conn, f)
}

// TestDeflate: a client that offers permessage-deflate to a server that
// compresses reads its compressed messages inflated, one after the other
// (no context kept between them) and between plain ones, and reads fewer
// bytes off the wire than the messages hold.
func TestDeflate(t *testing.T) {
	msg := bytes.Repeat([]byte(`42["broadcast",{"event":"update-task","diff":{"title":"a task"}}]`), 20)
	url := deflateServer(t, true, func(conn net.Conn, accepted bool) {
		if !accepted {
			return
		}
		_ = writeCompressed(conn, msg)
		_ = wsutil.WriteServerMessage(conn, ws.OpText, []byte("plain"))
		_ = writeCompressed(conn, msg)
		_, _ = io.Copy(io.Discard, conn)
	})
	// Counted from before the dial: the server's first frames may arrive
	// with the 101 response and be read by the handshake.
	before := BytesRead()
	c := Conn{Deflate: true}
	require.NoError(t, c.Dial(t.Context(), url, nil, 0, func() error { return nil }))
	defer c.Close()
	require.True(t, c.Deflate, "the server accepted the offer")
	for _, want := range [][]byte{msg, []byte("plain"), msg} {
		got, err := c.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	}
	read := BytesRead() - before
	require.Positive(t, read)
	require.Less(t, read, uint64(len(msg)), "the 101 response, two compressed copies and a plain word: fewer bytes than one copy")
}

// TestDeflateNotOffered: without the offer the server does not negotiate,
// and a compressed frame it sends anyway is an error, not garbage.
func TestDeflateNotOffered(t *testing.T) {
	url := deflateServer(t, true, func(conn net.Conn, accepted bool) {
		if accepted {
			return
		}
		_ = writeCompressed(conn, []byte("hello hello hello"))
		_, _ = io.Copy(io.Discard, conn)
	})
	var c Conn
	require.NoError(t, c.Dial(t.Context(), url, nil, 0, func() error { return nil }))
	defer c.Close()
	require.False(t, c.Deflate)
	_, err := c.ReadMessage()
	require.ErrorContains(t, err, "without permessage-deflate")
}

// TestDeflateDeclined: a server that does not speak the extension leaves
// the client on plain frames.
func TestDeflateDeclined(t *testing.T) {
	url := deflateServer(t, false, func(conn net.Conn, _ bool) {
		_ = wsutil.WriteServerMessage(conn, ws.OpText, []byte("plain"))
		_, _ = io.Copy(io.Discard, conn)
	})
	c := Conn{Deflate: true}
	require.NoError(t, c.Dial(t.Context(), url, nil, 0, func() error { return nil }))
	defer c.Close()
	require.False(t, c.Deflate, "declined")
	got, err := c.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, "plain", string(got))
}

// TestInflateBounded: a message that inflates past MaxFrame is refused.
func TestInflateBounded(t *testing.T) {
	c, srv := pipe(t)
	c.Deflate = true
	go func() { _ = writeCompressed(srv, make([]byte, MaxFrame+10)) }()
	_, err := c.ReadMessage()
	require.ErrorContains(t, err, "inflated message over")
}
