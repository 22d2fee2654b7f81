package gateway

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// dialDeflate is dialRaw with an offer of permessage-deflate in the
// request (offer, as a client writes it; "" offers none); it returns the
// extensions the gateway accepted.
func dialDeflate(t *testing.T, tg *testGateway, offer string) (*rawSocket, []httphead.Option) {
	t.Helper()
	d := ws.Dialer{Timeout: 5 * time.Second}
	if offer != "" {
		opts, ok := httphead.ParseOptions([]byte(offer), nil)
		require.True(t, ok)
		d.Extensions = opts
	}
	conn, br, hs, err := d.Dial(context.Background(), "ws"+strings.TrimPrefix(tg.url, "http")+wsPath)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	rs := &rawSocket{t: t, conn: conn, r: conn}
	if br != nil {
		rs.r = io.MultiReader(br, conn)
	}
	require.True(t, strings.HasPrefix(rs.text(), "0{"), "open packet")
	return rs, hs.Extensions
}

// connectDeflate is dialDeflate with the default offer of the stock
// Node client (ws: "permessage-deflate; client_max_window_bits") and a
// CONNECT as user u; it checks that compression was agreed.
func connectDeflate(t *testing.T, tg *testGateway, u string) *rawSocket {
	t.Helper()
	rs, ext := dialDeflate(t, tg, "permessage-deflate; client_max_window_bits")
	require.Len(t, ext, 1)
	rs.sendText(`40{"token":"` + token(t, u, time.Hour) + `"}`)
	require.True(t, strings.HasPrefix(rs.text(), `40{"sid":"`))
	return rs
}

// message reads the next text frame, inflated when it came compressed
// (pings answered on the way).
func (rs *rawSocket) message() (payload string, compressed bool, wire int) {
	rs.t.Helper()
	for {
		f, err := rs.read(5 * time.Second)
		require.NoError(rs.t, err)
		require.NotEqual(rs.t, ws.OpClose, f.Header.OpCode, "closed while waiting for a message")
		if f.Header.OpCode != ws.OpText {
			continue
		}
		wire = len(f.Payload)
		if compressed = f.Header.Rsv != 0; compressed {
			require.Equal(rs.t, ws.Rsv(true, false, false), f.Header.Rsv)
			f, err = wsflate.DecompressFrame(f)
			require.NoError(rs.t, err)
		}
		if string(f.Payload) == "2" {
			rs.sendText("3")
			continue
		}
		return string(f.Payload), compressed, wire
	}
}

// ack reads up to the next ack (an endpoint call's answer).
func (rs *rawSocket) ack() string {
	rs.t.Helper()
	for {
		p, _, _ := rs.message()
		if strings.HasPrefix(p, "43") {
			return p
		}
	}
}

// TestDeflateNegotiation: the gateway accepts permessage-deflate when a
// client offers it (as the stock Node client and browsers do), always
// without context takeover either way; a client that offers nothing, or
// an offer the gateway cannot honour, gets a plain socket that works; with
// DeflateThreshold -1 nothing is negotiated.
func TestDeflateNegotiation(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()
	off := e.startGateway(func(c *Config) { c.DeflateThreshold = -1 })
	for _, tc := range []struct {
		name, offer string
		tg          *testGateway
		accept      bool
	}{
		{"Node ws's offer", "permessage-deflate; client_max_window_bits", tg, true},
		{"a browser's offer", "permessage-deflate; client_max_window_bits, permessage-deflate", tg, true},
		{"no offer", "", tg, false},
		{"server_max_window_bits", "permessage-deflate; server_max_window_bits=10", tg, false},
		{"off", "permessage-deflate; client_max_window_bits", off, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, ext := dialDeflate(t, tc.tg, tc.offer)
			if !tc.accept {
				require.Empty(t, ext)
			} else {
				require.Len(t, ext, 1)
				var p wsflate.Parameters
				require.NoError(t, p.Parse(ext[0]))
				require.Equal(t, wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}, p)
			}
			rs.sendText(`40{"token":"` + token(t, "u1", time.Hour) + `"}`)
			require.True(t, strings.HasPrefix(rs.text(), `40{"sid":"`))
		})
	}
}

// bigEnvelope is an update of task id about n bytes long.
func bigEnvelope(id string, updatedAt int64, n int) []byte {
	var diff strings.Builder
	for i := 0; diff.Len() < n; i++ {
		fmt.Fprintf(&diff, `"field%d":"the value of field %d, in words",`, i, i)
	}
	return []byte(fmt.Sprintf(`{"event":%q,"id":%q,"updatedAt":%d,"diff":{%s"title":"t"}}`, proto.EventUpdateTask, id, updatedAt, diff.String()))
}

// TestDeflateBroadcast: one broadcast goes to two members that negotiated
// permessage-deflate and one that did not at once: the first two read the
// same compressed frame (RSV1, smaller on the wire) that inflates to the
// plain member's packet, byte for byte, and the gateway compressed it once
// (deflated_messages_total). A broadcast under the threshold goes plain
// to everyone, and is not compressed at all.
func TestDeflateBroadcast(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	tg := e.startGateway()
	d1, d2 := connectDeflate(t, tg, "u1"), connectDeflate(t, tg, "u2")
	plain := connectUser(t, tg, "u3")
	join := `421["endpoint",{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}]`
	for _, rs := range []*rawSocket{d1, d2} {
		rs.sendText(join)
		require.Contains(t, rs.ack(), `"ok":true`)
	}
	plain.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})

	tasks := mustRoom(t, "board-b1-tasks")
	env := bigEnvelope("t1", 1, 3000)
	_, err := e.js.Publish(context.Background(), proto.Subjects{}.Publish(tasks), env)
	require.NoError(t, err)
	want := plainEvent(t, plain)
	var wires []int
	for _, rs := range []*rawSocket{d1, d2} {
		got, compressed, wire := rs.message()
		require.True(t, compressed)
		require.Equal(t, want, got)
		require.Less(t, wire, len(want)/2)
		wires = append(wires, wire)
	}
	require.Equal(t, wires[0], wires[1])
	require.Equal(t, 1.0, tg.counter(tg.m.deflated))
	require.Less(t, tg.counter(tg.m.deflatedBytes.WithLabelValues("deflated")), tg.counter(tg.m.deflatedBytes.WithLabelValues("plain"))/2)

	// Under the threshold (512 bytes by default): plain to every member.
	_, err = e.js.Publish(context.Background(), proto.Subjects{}.Publish(tasks), envelopeFor(tasks, "t2", 2))
	require.NoError(t, err)
	want = plainEvent(t, plain)
	require.Less(t, len(want), DefaultDeflateThreshold)
	for _, rs := range []*rawSocket{d1, d2} {
		got, compressed, _ := rs.message()
		require.False(t, compressed)
		require.Equal(t, want, got)
	}
	require.Equal(t, 1.0, tg.counter(tg.m.deflated))
}

// plainEvent is the plain client's next broadcast packet.
func plainEvent(t *testing.T, c *client) string {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no broadcast within 5s")
	}
	return ""
}

// TestDeflateInbound: a member that negotiated permessage-deflate may send
// its packets compressed (the stock client compresses those over its
// threshold): a compressed call is answered.
func TestDeflateInbound(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()
	rs := connectDeflate(t, tg, "u1")
	f, err := wsflate.CompressFrame(ws.NewTextFrame([]byte(`421["endpoint",{"endpointName":"updateClient","endpointArgs":{"isActive":true}}]`)))
	require.NoError(t, err)
	require.NotZero(t, f.Header.Rsv)
	rs.frame(f)
	require.Contains(t, rs.ack(), `"ok":true`)
}

// TestDeflateKeptAliveUpgrade: net/http's upgrade path (a WebSocket opened
// on a kept-alive connection, engineio.Server.ServeHTTP) negotiates as
// the listener's does, and inflates what the client sends compressed.
func TestDeflateKeptAliveUpgrade(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()
	c := keptAlive(t, tg)
	opts, ok := httphead.ParseOptions([]byte("permessage-deflate; client_max_window_bits"), nil)
	require.True(t, ok)
	u, err := url.Parse("ws" + strings.TrimPrefix(tg.url, "http") + wsPath)
	require.NoError(t, err)
	br, hs, err := (&ws.Dialer{Extensions: opts}).Upgrade(c, u)
	require.NoError(t, err)
	require.Len(t, hs.Extensions, 1)
	rs := &rawSocket{t: t, conn: c, r: c}
	if br != nil {
		rs.r = io.MultiReader(br, c)
	}
	require.True(t, strings.HasPrefix(rs.text(), "0{"), "open packet")
	f, err := wsflate.CompressFrame(ws.NewTextFrame([]byte(`40{"token":"` + token(t, "u1", time.Hour) + `"}`)))
	require.NoError(t, err)
	rs.frame(f)
	require.True(t, strings.HasPrefix(rs.text(), `40{"sid":"`))
}
