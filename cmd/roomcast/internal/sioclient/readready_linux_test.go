//go:build linux

package sioclient

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/stretchr/testify/require"
)

// TestReadReady: messages come out whole and in order however the bytes
// arrive (what the handshake's reader holds, several frames in one segment,
// a header split across writes), a ping is answered with a pong, and an
// Engine.IO close ends the socket.
func TestReadReady(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cli, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer cli.Close()
	srv, err := ln.Accept()
	require.NoError(t, err)
	defer srv.Close()

	frame := func(p string) []byte {
		var b bytes.Buffer
		require.NoError(t, wsutil.WriteServerMessage(&b, ws.OpText, []byte(p)))
		return b.Bytes()
	}
	// The handshake's reader already holds the first message.
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(frame(`42["first"]`)), cli), readBufSize)
	_, err = br.Peek(1)
	require.NoError(t, err)
	c := &Conn{conn: cli, br: br}

	var got []string
	buf := make([]byte, 64)
	readUntil := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool {
			require.NoError(t, c.ReadReady(buf, func(m []byte) { got = append(got, string(m)) }))
			return len(got) >= n
		}, 5*time.Second, time.Millisecond)
	}

	two := append(frame(`42["a"]`), frame(`42["b"]`)...)
	_, err = srv.Write(two)
	require.NoError(t, err)
	readUntil(3)

	long := frame(`42["` + string(bytes.Repeat([]byte("x"), 200)) + `"]`) // a 4-byte header, longer than buf
	_, err = srv.Write(long[:1])
	require.NoError(t, err)
	require.NoError(t, c.ReadReady(buf, func(m []byte) { got = append(got, string(m)) }))
	_, err = srv.Write(append(long[1:], frame("2")...)) // then a ping
	require.NoError(t, err)
	readUntil(4)
	require.Equal(t, []string{`42["first"]`, `42["a"]`, `42["b"]`, string(long[4:])}, got)

	pong, err := wsutil.ReadClientText(srv)
	require.NoError(t, err)
	require.Equal(t, "3", string(pong))

	_, err = srv.Write(frame("1"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return c.ReadReady(buf, func([]byte) {}) == ErrClosed
	}, 5*time.Second, time.Millisecond)
}

// TestReadReadyRefusesHugeFrames: a declared length over the limit is an
// error, not a buffer of that size.
func TestReadReadyRefusesHugeFrames(t *testing.T) {
	h := []byte{0x81, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	c := &Conn{}
	_, err := c.frames(h, func([]byte) {})
	require.ErrorContains(t, err, "over the")
}
