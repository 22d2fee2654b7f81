//go:build linux

package engineio

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSenderBrokenRing: when io_uring_enter fails (here: the ring's
// descriptor closed under it), the sends of that submission fail and their
// sessions end with the error, and the Sender writes each transport with
// writev from then on.
func TestSenderBrokenRing(t *testing.T) {
	snd, err := NewSender(true)
	if err != nil {
		t.Skipf("io_uring not used here: %v", err)
	}
	require.NoError(t, unix.Close(snd.ring.fd))
	ws := make([]*WebSocket, 3)
	clients := make([]net.Conn, len(ws))
	for i := range ws {
		srv, cli := tcpPair(t)
		ws[i], clients[i] = newTestWebSocket(srv), cli
	}
	frame := TextFrame([]byte(`42["broadcast",{}]`))
	write := func() {
		var ts []Transport
		for _, w := range ws {
			_, start := w.Queue(frame)
			require.True(t, start)
			ts = append(ts, w)
		}
		snd.Write(ts)
	}
	write()
	for _, w := range ws {
		ended := w.h.(*testHandler).endedWith()
		require.Len(t, ended, 1)
		require.Contains(t, ended[0], "io_uring_enter")
	}
	require.False(t, snd.Batched())

	for i := range ws {
		srv, cli := tcpPair(t)
		ws[i], clients[i] = newTestWebSocket(srv), cli
	}
	write()
	for _, c := range clients {
		got := make([]byte, len(frame))
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err := io.ReadFull(c, got)
		require.NoError(t, err)
		require.Equal(t, frame, got)
	}
}
