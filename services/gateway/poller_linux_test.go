//go:build linux

package gateway

import (
	"bytes"
	"net"
	"testing"

	"github.com/gobwas/ws"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// TestConsumeKeepsPartialFrames: a frame that arrives in pieces (header cut,
// payload cut) is handled once whole, and two frames in one read both are.
func TestConsumeKeepsPartialFrames(t *testing.T) {
	g := &Gateway{cfg: Config{}.withDefaults(), log: zerolog.Nop()}
	m, err := newMetrics(g.cfg.Registry)
	require.NoError(t, err)
	g.m = m
	srv, cli := net.Pipe()
	t.Cleanup(func() { srv.Close(); cli.Close() })
	s := newSocket(g, srv, nil, "")
	s.state = stateConnected

	var frames bytes.Buffer
	for _, p := range []string{"one", "two"} {
		require.NoError(t, ws.WriteFrame(&frames, ws.MaskFrame(ws.NewPingFrame([]byte(p)))))
	}
	b := frames.Bytes()                 // two frames of 2+4+3 bytes
	require.True(t, s.consume(b[:1]))   // a header's first byte
	require.True(t, s.consume(b[1:4]))  // header, part of the mask
	require.True(t, s.consume(b[4:7]))  // the mask, part of the payload
	require.True(t, s.consume(b[7:12])) // the rest of one, part of two
	require.NotEmpty(t, s.inbuf)
	require.True(t, s.consume(b[12:]))
	require.Empty(t, s.inbuf)
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
