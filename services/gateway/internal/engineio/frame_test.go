package engineio

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/stretchr/testify/require"
)

// TestCloseFrameReason: a reason longer than a control frame holds is cut
// at a character, so that the frame stays valid.
func TestCloseFrameReason(t *testing.T) {
	f := CloseFrame(StatusProtocolError, strings.Repeat("é", 100))
	h, err := ws.ReadHeader(bytes.NewReader(f))
	require.NoError(t, err)
	require.LessOrEqual(t, h.Length, int64(125))
	require.True(t, IsClose(f))
	code, reason := ws.ParseCloseFrameData(Payload(f))
	require.Equal(t, ws.StatusProtocolError, code)
	require.True(t, utf8.ValidString(reason))
	require.Equal(t, strings.Repeat("é", 61), reason)
}

// TestSeal: a frame sealed in place (each header length: 7 bits, 16, 64)
// reads back with gobwas/ws as one text frame of the packet, and Payload
// gives the packet back.
func TestSeal(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		packet := bytes.Repeat([]byte("x"), n)
		for _, f := range [][]byte{Seal(append(make([]byte, MaxHeader), packet...)), TextFrame(packet)} {
			got, err := ws.ReadFrame(bytes.NewReader(f))
			require.NoError(t, err, n)
			require.True(t, got.Header.Fin)
			require.Equal(t, ws.OpText, got.Header.OpCode)
			require.True(t, bytes.Equal(packet, got.Payload), n)
			require.True(t, bytes.Equal(packet, Payload(f)), n)
			require.False(t, IsClose(f))
		}
	}
	require.Nil(t, Payload([]byte{0x81, 5, 'a'}), "a cut frame has no payload")
}
