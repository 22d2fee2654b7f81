package sioclient

import (
	"bytes"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

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

func TestConnectReply(t *testing.T) {
	for _, tc := range []struct{ reply, sid, pid string }{
		{`{"sid":"abc"}`, "abc", ""},
		{`{"sid":"abc","pid":"p-1"}`, "abc", "p-1"},
		{`{"sid":"a\"b"}`, "a\"b", ""}, // escapes: the JSON decoder reads it
		{`{"sid":"a","pid":"p\"q"}`, "a", "p\"q"},
		{`{ "sid" : "x", "pid": "p" }`, "x", "p"},     // spaced out
		{`{"pid":"p","sid":"x"}`, "x", "p"},           // the other order
		{`{"sid":"x","pid":"p","other":1}`, "x", "p"}, // more fields
		{`{"sid":"x","pid":"p"`, "", ""},              // cut short: neither
		{`not json`, "", ""},
	} {
		sid, pid := connectReply([]byte(tc.reply))
		require.Equal(t, tc.sid, sid, tc.reply)
		require.Equal(t, tc.pid, pid, tc.reply)
	}
}

// TestConnectPacket: a new session's CONNECT carries the auth alone; a
// reconnect's carries pid and offset as well (offset left out when the
// socket got none), as socket.io-client ≥ 4.6 sends it.
func TestConnectPacket(t *testing.T) {
	require.Equal(t, `40{"token":"t"}`, string(connectPacket(Options{Token: "t"})))
	require.Equal(t, `40{"token":"t","clientId":"c1"}`, string(connectPacket(Options{Token: "t", ClientID: "c1"})))
	require.Equal(t, `40{"token":"t","clientId":"c1","pid":"p-1","offset":"1234"}`,
		string(connectPacket(Options{Token: "t", ClientID: "c1", PID: "p-1", Offset: "1234"})))
	require.Equal(t, `40{"token":"t","pid":"p-1"}`, string(connectPacket(Options{Token: "t", PID: "p-1"})), "no offset yet")
	require.Equal(t, `40{"token":"t","pid":"p\"1","offset":"a\\b"}`,
		string(connectPacket(Options{Token: "t", PID: `p"1`, Offset: `a\b`})), "JSON-escaped")
}

func TestEventOffset(t *testing.T) {
	for _, tc := range []struct {
		msg, off string
		ok       bool
	}{
		{`42["broadcast",{"destination":"board-b1-tasks","data":{"event":"x"},"seq":12,"prevSeq":3},"12"]`, "12", true},
		{`42["broadcast",{"destination":"client-c1","data":{},"seq":0,"prevSeq":0}]`, "", false}, // a client room's: none
		{`42["broadcast",{"data":{"title":"a \"quoted\" \",\"title"}}]`, "", false},
		{`42["broadcast",{},"a\"b"]`, `a"b`, true}, // escapes: decoded
		{`42["broadcast",{},"a\\"]`, `a\`, true},
		{`42["broadcast",{}, "7"]`, "7", true}, // spaced out: decoded
		{`42["broadcast",{"x":"y,"},"7"]`, "7", true},
		{`42["broadcast","payload"]`, "payload", true}, // any last string, as socket.io-client takes it
		{`42["broadcast"]`, "", false},                 // the event's name is not an offset
		{`421["broadcast",{},"7"]`, "7", true},         // with an ack id
		{`43["broadcast",{},"7"]`, "", false},          // not an event
		{`42["broadcast",{},7]`, "", false},
		{`42["broadcast",{},"7"`, "", false},
		{`42"]`, "", false},
		{``, "", false},
	} {
		off, ok := EventOffset([]byte(tc.msg))
		require.Equal(t, tc.ok, ok, tc.msg)
		require.Equal(t, tc.off, string(off), tc.msg)
	}
}

// FuzzEventOffset: wherever the message is a JSON event, the fast path
// agrees with encoding/json, and it never panics on anything else.
func FuzzEventOffset(f *testing.F) {
	for _, s := range []string{`42["broadcast",{"seq":1},"1"]`, `42["broadcast",{}]`, `42["broadcast",{},"a\"b"]`,
		`42["b",{},",\""]`, `42["b","x\\"]`, `42["b",{}, "7" ]`, `42[",","]`, `42"]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		off, ok := EventOffset(msg)
		if len(msg) < 2 || msg[0] != '4' || msg[1] != '2' {
			require.False(t, ok)
			return
		}
		var args []any
		i := bytes.IndexByte(msg, '[')
		if i < 0 || !utf8.Valid(msg) || json.Unmarshal(msg[i:], &args) != nil {
			return // not JSON (or not UTF-8, which the decoder mends): any answer, no panic
		}
		if !bytes.HasSuffix(msg, []byte(`"]`)) {
			require.False(t, ok, "%q", msg)
			return
		}
		last, isString := args[len(args)-1].(string)
		want := isString && len(args) >= 2
		require.Equal(t, want, ok, "%q", msg)
		if want {
			require.Equal(t, last, string(off), "%q", msg)
		}
	})
}

// TestRecoveryHandshake: the CONNECT reply's pid is kept, the offset of
// every event after it, and a reconnect presenting them is recovered when
// the reply's pid is its own, not when the server answers a new session.
func TestRecoveryHandshake(t *testing.T) {
	// first connection: the server offers recovery
	c, srv := pipeConn(t)
	go func() {
		_, _ = wsutil.ReadClientText(srv) // the CONNECT
		for _, m := range []string{`40{"sid":"s1","pid":"p1"}`,
			`42["broadcast",{"destination":"board-b1-tasks","seq":5,"prevSeq":0},"5"]`,
			`42["broadcast",{"destination":"client-c1","seq":0,"prevSeq":0}]`, // no offset: the last one stays
			`2`} {
			_ = wsutil.WriteServerMessage(srv, ws.OpText, []byte(m))
		}
	}()
	require.NoError(t, c.connect(Options{Token: "t"}))
	require.Equal(t, "s1", c.SID)
	require.Equal(t, "p1", c.PID)
	require.False(t, c.Recovered, "a first connection recovers nothing")
	require.Empty(t, c.Offset())
	for range 2 {
		_, err := c.Next()
		require.NoError(t, err)
	}
	require.Equal(t, "5", c.Offset())

	// the reconnect presents them; recovered: the same pid back
	for _, tc := range []struct {
		reply     string
		recovered bool
		offset    string
	}{
		{`40{"sid":"s1","pid":"p1"}`, true, "5"},
		{`40{"sid":"s2","pid":"p2"}`, false, ""}, // a new session
		{`40{"sid":"s3"}`, false, ""},            // recovery turned off
	} {
		c2, srv2 := pipeConn(t)
		sent := make(chan string, 1)
		go func() {
			b, _ := wsutil.ReadClientText(srv2)
			sent <- string(b)
			_ = wsutil.WriteServerMessage(srv2, ws.OpText, []byte(tc.reply))
		}()
		require.NoError(t, c2.connect(Options{Token: "t", ClientID: "c1", PID: c.PID, Offset: c.Offset()}))
		require.Equal(t, `40{"token":"t","clientId":"c1","pid":"p1","offset":"5"}`, <-sent)
		require.Equal(t, tc.recovered, c2.Recovered, tc.reply)
		require.Equal(t, tc.offset, c2.Offset(), "a recovered session goes on from the offset it presented")
	}
}

// TestNoOffsetWithoutPID: without a pid (recovery off), a string last
// argument is an event's own business, not an offset.
func TestNoOffsetWithoutPID(t *testing.T) {
	c, srv := pipeConn(t)
	go func() {
		_, _ = wsutil.ReadClientText(srv)
		for _, m := range []string{`40{"sid":"s1"}`, `42["broadcast",{},"5"]`} {
			_ = wsutil.WriteServerMessage(srv, ws.OpText, []byte(m))
		}
	}()
	require.NoError(t, c.connect(Options{Token: "t"}))
	_, err := c.Next()
	require.NoError(t, err)
	require.Empty(t, c.Offset())
}
