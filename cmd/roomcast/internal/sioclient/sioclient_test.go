package sioclient

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/wsclient"
)

// pipeConn is a Conn over an in-memory pipe, and the server's end.
func pipeConn(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	cli, srv := net.Pipe()
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return &Conn{ws: wsclient.Over(cli)}, srv
}

// TestCallAllSendsTogetherAndReportsAFailedCall: the calls go out before
// any ack is read, successful acks pass without their data decoded, and a
// failed call's error comes back.
func TestCallAllSendsTogetherAndReportsAFailedCall(t *testing.T) {
	c, srv := pipeConn(t)
	served := make(chan []string, 1)
	go func() {
		var got []string
		for range 3 { // every call is read before any ack is written
			b, err := wsutil.ReadClientText(srv)
			if err != nil {
				return
			}
			got = append(got, string(b))
		}
		served <- got
		for i, ack := range []string{`[{"ok":true,"data":{"roomName":"board-b1"}}]`, `[{"ok":true,"data":{}}]`,
			`[{"ok":false,"error":{"code":"forbidden","message":"access to chat-a-b denied"}}]`} {
			_ = wsutil.WriteServerMessage(srv, ws.OpText, []byte("43"+strconv.Itoa(i)+ack))
		}
	}()
	err := c.CallAll([]Call{{"addToRoom", map[string]string{"roomName": "board-b1"}},
		{"addToRoom", map[string]string{"roomName": "org-o1"}}, {"addToRoom", map[string]string{"roomName": "chat-a-b"}}})
	require.ErrorContains(t, err, "forbidden: access to chat-a-b denied")
	got := <-served
	require.Len(t, got, 3)
	require.True(t, strings.HasPrefix(got[0], `420["endpoint",{"endpointName":"addToRoom"`), got[0])
	require.True(t, strings.HasPrefix(got[2], `422["endpoint",`), got[2])
}

func TestConnectSID(t *testing.T) {
	require.Equal(t, "abc", connectSID([]byte(`{"sid":"abc"}`)))
	require.Equal(t, "a\"b", connectSID([]byte(`{"sid":"a\"b"}`)), "escapes: the JSON decoder reads it")
	require.Equal(t, "x", connectSID([]byte(`{ "sid" : "x", "pid": "p" }`)))
}
