package wsclient

import (
	"fmt"
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
	type sent struct {
		msg    string
		before time.Time
	}
	sends := make(chan sent)
	next := make(chan struct{})
	url := deflateServer(t, false, func(conn net.Conn, _ bool) {
		for i := 0; ; i++ {
			select {
			case <-next:
			case <-t.Context().Done():
				return
			}
			msg := fmt.Sprint("m", i)
			before := time.Now()
			if err := wsutil.WriteServerMessage(conn, ws.OpText, []byte(msg)); err != nil {
				return
			}
			sends <- sent{msg, before}
		}
	})
	before := BytesRead()
	c := Conn{Stamped: true}
	require.NoError(t, c.Dial(t.Context(), url, nil, 0, func() error { return nil }))
	defer c.Close()
	// one message each time: the server sends it, the client reads it
	exchange := func() (sent, time.Time) {
		next <- struct{}{}
		s := <-sends // the send has returned: the message is in the socket
		readAt := time.Now()
		got, err := c.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, s.msg, string(got))
		return s, readAt
	}

	// The kernel turns stamping on for the machine a moment after the first
	// socket asks for it (a static key, switched by a work queue): the
	// first messages may come before.
	require.Eventually(t, func() bool { exchange(); return c.Arrival() > 0 }, 5*time.Second, time.Millisecond, "stamping on")
	last := c.Arrival()
	for range 3 {
		s, readAt := exchange()
		arrival := c.Arrival()
		require.GreaterOrEqual(t, arrival, s.before.UnixNano(), "stamped after the send began")
		require.Less(t, arrival, readAt.UnixNano(), "stamped on arrival, before the read")
		require.Greater(t, arrival, last, "each message its own stamp")
		last = arrival
	}
	require.Greater(t, BytesRead()-before, uint64(4*len("m0")), "what a stamped socket reads is counted too")
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
