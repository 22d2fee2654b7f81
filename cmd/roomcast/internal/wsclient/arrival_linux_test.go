package wsclient

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/stretchr/testify/require"
)

// TestArrivalStamped: a stamped socket's Arrival is when each message
// reached it, by the kernel's stamp, not when it was read: the stamp falls
// between the start of the server's send and the client's read (loopback
// stamps a segment inside the sender's send, before it returns). Each
// message moves it on; an unstamped socket has none. What it reads is
// counted in BytesRead, as any socket's.
func TestArrivalStamped(t *testing.T) {
	type sent struct{ before time.Time }
	sends := make(chan sent)
	next := make(chan struct{})
	url := deflateServer(t, false, func(conn net.Conn, _ bool) {
		for _, msg := range []string{"one", "two", "three"} {
			<-next
			before := time.Now()
			if err := wsutil.WriteServerMessage(conn, ws.OpText, []byte(msg)); err != nil {
				return
			}
			sends <- sent{before}
		}
		_, _ = io.Copy(io.Discard, conn)
	})
	before := BytesRead()
	c := Conn{Stamped: true}
	require.NoError(t, c.Dial(t.Context(), url, nil, 0, func() error { return nil }))
	defer c.Close()

	var last int64
	for i, want := range []string{"one", "two", "three"} {
		next <- struct{}{}
		s := <-sends // the send has returned: the message is in the socket
		readAt := time.Now()
		got, err := c.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, want, string(got))
		arrival := c.Arrival()
		if i == 0 && arrival == 0 {
			// The kernel turns stamping on for the machine a moment after
			// the first socket asks for it (a deferred static key): the
			// first message may come before.
			continue
		}
		require.GreaterOrEqual(t, arrival, s.before.UnixNano(), "stamped after the send began")
		require.Less(t, arrival, readAt.UnixNano(), "stamped on arrival, before the read")
		require.Greater(t, arrival, last, "each message its own stamp")
		last = arrival
	}
	require.Greater(t, BytesRead()-before, uint64(len("one")+len("two")), "what a stamped socket reads is counted too")
}

func TestArrivalUnstamped(t *testing.T) {
	url := deflateServer(t, false, func(conn net.Conn, _ bool) {
		_ = wsutil.WriteServerMessage(conn, ws.OpText, []byte("plain"))
		_, _ = io.Copy(io.Discard, conn)
	})
	var c Conn
	require.NoError(t, c.Dial(t.Context(), url, nil, 0, func() error { return nil }))
	defer c.Close()
	got, err := c.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, "plain", string(got))
	require.Zero(t, c.Arrival())
}
