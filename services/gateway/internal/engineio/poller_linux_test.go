//go:build linux

package engineio

import (
	"bytes"
	"net"
	"os"
	"testing"

	"github.com/gobwas/ws"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestConsumeKeepsPartialFrames: a frame that arrives in pieces (header cut,
// payload cut) is handled once whole, and two frames in one read both are.
func TestConsumeKeepsPartialFrames(t *testing.T) {
	srv, cli := net.Pipe()
	t.Cleanup(func() { srv.Close(); cli.Close() })
	s := newTestWebSocket(srv)

	var frames bytes.Buffer
	for _, p := range []string{"one", "two"} {
		require.NoError(t, ws.WriteFrame(&frames, ws.MaskFrame(ws.NewPingFrame([]byte(p)))))
	}
	b := frames.Bytes()                 // two frames of 2+4+3 bytes
	require.True(t, s.consume(b[:1]))   // a header's first byte
	require.True(t, s.consume(b[1:4]))  // header, part of the mask
	require.True(t, s.consume(b[4:7]))  // the mask, part of the payload
	require.True(t, s.consume(b[7:12])) // the rest of one, part of two
	require.NotNil(t, s.inbuf)
	require.True(t, s.consume(b[12:]))
	require.Nil(t, s.inbuf)
	for _, want := range []string{"one", "two"} {
		f, err := ws.ReadFrame(cli)
		require.NoError(t, err)
		require.Equal(t, ws.OpPong, f.Header.OpCode)
		require.Equal(t, want, string(f.Payload))
	}
}

// FuzzParseHeader: the poller's header parser agrees with gobwas/ws on every
// complete header, and asks for more bytes only when the header is cut.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x81, 0xfe, 0x01, 0x00, 1, 2, 3, 4})
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9})
	f.Add([]byte{0x88, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, ok := parseHeader(b)
		want, err := ws.ReadHeader(bytes.NewReader(b))
		if !ok {
			require.Error(t, err, "parseHeader wants more bytes; gobwas read a header")
			return
		}
		require.LessOrEqual(t, n, len(b))
		if err != nil {
			return // gobwas refuses some headers (e.g. reserved bits): handled after
		}
		if want.Length < 0 || want.Length > 1<<62 {
			require.Equal(t, int64(1<<62), h.Length)
			want.Length = h.Length
		}
		require.Equal(t, want, h)
	})
}

// seqpacketSocket is a socket whose every write arrives as one record at
// the peer (an AF_UNIX SOCK_SEQPACKET pair): the peer counts the writes.
func seqpacketSocket(t *testing.T) (*WebSocket, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fds[0]), "seqpacket")
	conn, err := net.FileConn(f)
	f.Close()
	require.NoError(t, err)
	raw, err := conn.(*net.UnixConn).SyscallConn()
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(); unix.Close(fds[1]) })
	s := newTestWebSocket(conn)
	s.raw = raw // rawConnOf takes TCP only
	return s, fds[1]
}

// readRecord reads one record (one write of the socket) from fd.
func readRecord(t *testing.T, fd int) []byte {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Read(fd, buf)
	require.NoError(t, err)
	return buf[:n]
}

func maskedFrames(t *testing.T, frames ...ws.Frame) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, f := range frames {
		require.NoError(t, ws.WriteFrame(&b, ws.MaskFrame(f)))
	}
	return b.Bytes()
}

// TestConsumeAnswersOneReadInOneWrite: the answers to the frames of one
// read go out in one write (three pipelined joins, three acks, one write),
// and a single frame's answer goes out at once.
func TestConsumeAnswersOneReadInOneWrite(t *testing.T) {
	s, peer := seqpacketSocket(t)
	require.True(t, s.consume(maskedFrames(t, ws.NewPingFrame([]byte("a")), ws.NewPingFrame([]byte("b")), ws.NewPingFrame([]byte("c")))))
	rec := readRecord(t, peer)
	for _, want := range []string{"a", "b", "c"} {
		f, err := ws.ReadFrame(bytes.NewReader(rec))
		require.NoError(t, err, "the three pongs in one write")
		require.Equal(t, ws.OpPong, f.Header.OpCode)
		require.Equal(t, want, string(f.Payload))
		rec = rec[2+len(f.Payload):]
	}
	require.Empty(t, rec)

	require.True(t, s.consume(maskedFrames(t, ws.NewPingFrame([]byte("d")))))
	f, err := ws.ReadFrame(bytes.NewReader(readRecord(t, peer)))
	require.NoError(t, err)
	require.Equal(t, "d", string(f.Payload))
	s.mu.Lock()
	require.False(t, s.writing, "no writer left behind")
	s.mu.Unlock()
}

// TestConsumeHeldWritesStillClose: a read whose last frame closes the
// socket still writes the answers before it and the close, then closes.
func TestConsumeHeldWritesStillClose(t *testing.T) {
	s, peer := seqpacketSocket(t)
	require.False(t, s.consume(maskedFrames(t, ws.NewPingFrame([]byte("a")), ws.NewCloseFrame(nil))))
	r := bytes.NewReader(readRecord(t, peer))
	f, err := ws.ReadFrame(r)
	require.NoError(t, err)
	require.Equal(t, ws.OpPong, f.Header.OpCode)
	f, err = ws.ReadFrame(r)
	require.NoError(t, err)
	require.Equal(t, ws.OpClose, f.Header.OpCode)
	buf := make([]byte, 16)
	n, err := unix.Read(peer, buf)
	require.NoError(t, err)
	require.Zero(t, n, "closed after the close frame")
}

// TestPolledReadAgain: readiness reported while a reader is at work makes
// that reader read again (done says false once), and starts no second one.
func TestPolledReadAgain(t *testing.T) {
	e := &polled{}
	e.state.Store(pollReading) // a reader at work
	e.readable()
	e.readable()
	require.Equal(t, pollAgain, e.state.Load(), "told once, no second reader")
	require.False(t, e.done(), "read again")
	require.Equal(t, pollReading, e.state.Load())
	require.True(t, e.done())
	require.Equal(t, pollIdle, e.state.Load())
}
