package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/stretchr/testify/require"
)

// pollClient is a long-polling client of Engine.IO v4, as the stock client's
// polling transport speaks it.
type pollClient struct {
	t   *testing.T
	url string
	sid string
}

const pollPath = "/socket.io/?EIO=4&transport=polling"

func openPolling(t *testing.T, tg *testGateway) *pollClient {
	t.Helper()
	status, body := pollRequest(t, http.MethodGet, tg.url+pollPath, "")
	require.Equal(t, http.StatusOK, status, body)
	require.True(t, strings.HasPrefix(body, "0{"), body)
	var open struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int      `json:"pingInterval"`
		MaxPayload   int      `json:"maxPayload"`
	}
	require.NoError(t, json.Unmarshal([]byte(body[1:]), &open))
	require.Equal(t, []string{"websocket"}, open.Upgrades)
	require.NotEmpty(t, open.SID)
	return &pollClient{t: t, url: tg.url + pollPath + "&sid=" + open.SID, sid: open.SID}
}

func pollRequest(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// post sends packets in one POST.
func (c *pollClient) post(packets ...string) (int, string) {
	return pollRequest(c.t, http.MethodPost, c.url, strings.Join(packets, "\x1e"))
}

// get long-polls once and returns the packets.
func (c *pollClient) get() []string {
	c.t.Helper()
	status, body := pollRequest(c.t, http.MethodGet, c.url, "")
	require.Equal(c.t, http.StatusOK, status, body)
	return strings.Split(body, "\x1e")
}

// until polls until a packet with prefix comes, and returns it.
func (c *pollClient) until(prefix string) string {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range c.get() {
			if strings.HasPrefix(p, prefix) {
				return p
			}
		}
	}
	c.t.Fatalf("no packet %q", prefix)
	return ""
}

// probe opens the session's upgrade WebSocket and probes it, a GET waiting
// meanwhile: "2probe" is answered "3probe", and the GET is let go. It
// returns the WebSocket (its reads through rw, which holds what came with
// the 101) and the packets of the GET that was let go.
func (c *pollClient) probe(tg *testGateway) (conn net.Conn, rw io.ReadWriter, letGo []string) {
	c.t.Helper()
	conn, br, _, err := ws.Dialer{Timeout: 5 * time.Second}.Dial(context.Background(), "ws"+strings.TrimPrefix(tg.url, "http")+wsPath+"&sid="+c.sid)
	require.NoError(c.t, err)
	c.t.Cleanup(func() { conn.Close() })
	rd := io.Reader(conn)
	if br != nil {
		rd = io.MultiReader(br, conn)
	}
	rw = struct {
		io.Reader
		io.Writer
	}{rd, conn}
	waiting := make(chan []string, 1)
	go func() { waiting <- c.get() }()
	// The GET may or may not wait yet when the probe comes: either way it
	// is let go (at once, with a noop, once the probe came).
	require.NoError(c.t, wsutil.WriteClientText(conn, []byte("2probe")))
	msg, err := wsutil.ReadServerText(rw)
	require.NoError(c.t, err)
	require.Equal(c.t, "3probe", string(msg), "no open packet on an upgrade: the probe's answer first")
	select {
	case letGo = <-waiting:
	case <-time.After(5 * time.Second):
		c.t.Fatal("the waiting GET was not let go")
	}
	return conn, rw, letGo
}

func (c *pollClient) connect(user string) {
	c.t.Helper()
	status, body := c.post(`40{"token":"` + token(c.t, user, time.Hour) + `"}`)
	require.Equal(c.t, http.StatusOK, status, body)
	require.Equal(c.t, "ok", body)
	c.until(`40{"sid":"`)
}

// TestPolling: a session over long-polling alone: CONNECT, calls in one
// POST (\x1e-separated) answered, broadcasts, ping and pong, the client's
// close; the session is forgotten after it.
func TestPolling(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	tg := e.startGateway(func(c *Config) { c.PingInterval, c.PingTimeout = 200*time.Millisecond, 5*time.Second })
	c := openPolling(t, tg)
	c.connect("u1")
	status, _ := c.post(`421["endpoint",{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}]`,
		`422["endpoint",{"endpointName":"updateClient","endpointArgs":{"isActive":true}}]`)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, c.until("431["), `"ok":true`)
	env1, seq1 := e.publish(mustRoom(t, "board-b1-tasks"), "t1", 1)
	b := c.until(`42["broadcast"`)
	require.Contains(t, b, string(env1))
	require.Contains(t, b, `"seq":`+itoa(seq1))

	// The server's ping comes on a GET; the pong keeps the session.
	c.until("2")
	status, _ = c.post("3")
	require.Equal(t, http.StatusOK, status)
	c.until("2")
	c.post("3")

	status, _ = c.post("1") // the client closes
	require.Equal(t, http.StatusOK, status)
	require.Eventually(t, func() bool { return tg.roomMembers(mustRoom(t, "board-b1-tasks")) == 0 }, 5*time.Second, 10*time.Millisecond)
	c.until("1") // a GET still takes the last packets, then the sid is forgotten
	require.Zero(t, tg.eio.Polled())
	status, body := pollRequest(t, http.MethodGet, c.url, "")
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, body, "Session ID unknown")
}

func itoa(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// TestPollingRefusals: what a polling client can get wrong: an unknown sid
// (400, code 1), a POST over maxPayload (413, the session closed), two
// GETs at once (400, the session closed), no pong (the session closed,
// the waiting GET answered with a close packet), an upgrade for an unknown
// sid (refused before the upgrade).
func TestPollingRefusals(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) {
		c.MaxPayload = 1024
		c.PingInterval, c.PingTimeout = 100*time.Millisecond, 100*time.Millisecond
	})

	status, body := pollRequest(t, http.MethodGet, tg.url+pollPath+"&sid=nosuch", "")
	require.Equal(t, http.StatusBadRequest, status)
	require.JSONEq(t, `{"code":1,"message":"Session ID unknown"}`, body)
	status, _ = pollRequest(t, http.MethodPost, tg.url+pollPath, "40")
	require.Equal(t, http.StatusBadRequest, status, "a POST opens nothing")
	_, _, _, err := ws.Dialer{Timeout: 5 * time.Second}.Dial(context.Background(), "ws"+strings.TrimPrefix(tg.url, "http")+wsPath+"&sid=nosuch")
	require.ErrorContains(t, err, "400")

	c := openPolling(t, tg)
	status, _ = c.post(strings.Repeat("4", 2000))
	require.Equal(t, http.StatusRequestEntityTooLarge, status)
	require.Eventually(t, func() bool { return tg.eio.Polled() == 0 }, 5*time.Second, 10*time.Millisecond, "closed")

	c = openPolling(t, tg)
	c.connect("u1")
	// Two GETs at once: one is refused (400) and the session closed, the
	// other (the one waiting) carries the close packet.
	results := make(chan string, 2)
	for range 2 {
		go func() {
			status, body := pollRequest(t, http.MethodGet, c.url, "")
			results <- itoa(uint64(status)) + " " + body
		}()
	}
	both := []string{<-results, <-results}
	if strings.HasPrefix(both[0], "200") {
		both[0], both[1] = both[1], both[0]
	}
	require.True(t, strings.HasPrefix(both[0], "400 "), "%q", both)
	require.True(t, strings.HasPrefix(both[1], "200 ") && strings.HasSuffix(both[1], "1"), "%q", both)

	c = openPolling(t, tg)
	c.connect("u2")
	c.until("1") // pings unanswered: closed, the close packet on a GET
	require.Eventually(t, func() bool { return tg.eio.Polled() == 0 }, 5*time.Second, 10*time.Millisecond)
}

// TestPollingUpgrade: the upgrade to a WebSocket: 2probe is answered
// 3probe over the WebSocket and the waiting GET is let go with a noop;
// broadcasts queued on the polling side before "5" arrive over the
// WebSocket after it, once each and in order; the session then lives on
// the WebSocket, and a second upgrade of it is refused. A probe that
// fails leaves the session polling.
func TestPollingUpgrade(t *testing.T) {
	e := newEnv(t)
	e.answerRoomState(nil)
	e.answerAuthz(func(string, string) bool { return true })
	tg := e.startGateway()
	tasks := mustRoom(t, "board-b1-tasks")

	// A failed probe: the WebSocket closes before "5"; polling goes on.
	c := openPolling(t, tg)
	c.connect("u1")
	conn, _, _, err := ws.Dialer{Timeout: 5 * time.Second}.Dial(context.Background(), "ws"+strings.TrimPrefix(tg.url, "http")+wsPath+"&sid="+c.sid)
	require.NoError(t, err)
	conn.Close()
	c.post(`421["endpoint",{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}]`)
	require.Contains(t, c.until("431["), `"ok":true`)

	c = openPolling(t, tg)
	c.connect("u2")
	c.post(`421["endpoint",{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}]`)
	require.Contains(t, c.until("431["), `"ok":true`)
	conn, rw, letGo := c.probe(tg)
	require.NotEmpty(t, letGo)
	// Broadcasts while the client pauses polling: queued for a GET that
	// does not come, then moved to the WebSocket at "5".
	var want []uint64
	for i := range 3 {
		_, seq := e.publish(tasks, "t1", int64(i+1))
		want = append(want, seq)
	}
	require.Eventually(t, func() bool { return tg.counter(tg.m.messagesOut) >= 3 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, wsutil.WriteClientText(conn, []byte("5")))
	_, seq := e.publish(tasks, "t1", 4)
	want = append(want, seq)
	var got []uint64
	for len(got) < len(want) {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		msg, err := wsutil.ReadServerText(rw)
		require.NoError(t, err, "got %v of %v", got, want)
		var b struct {
			Seq uint64 `json:"seq"`
		}
		if m, ok := bytes.CutPrefix(msg, []byte(`42["broadcast",`)); ok {
			var args []json.RawMessage
			require.NoError(t, json.Unmarshal(append([]byte("["), m...), &args))
			require.NoError(t, json.Unmarshal(args[0], &b))
			got = append(got, b.Seq)
		}
	}
	require.Equal(t, want, got, "once each, in order")
	// The session is the WebSocket's: a call is answered there.
	require.NoError(t, wsutil.WriteClientText(conn, []byte(`422["endpoint",{"endpointName":"updateClient","endpointArgs":{"isActive":true}}]`)))
	for {
		msg, err := wsutil.ReadServerText(rw)
		require.NoError(t, err)
		if bytes.HasPrefix(msg, []byte("432[")) {
			require.Contains(t, string(msg), `"ok":true`)
			break
		}
	}
	_, _, _, err = ws.Dialer{Timeout: 5 * time.Second}.Dial(context.Background(), "ws"+strings.TrimPrefix(tg.url, "http")+wsPath+"&sid="+c.sid)
	require.ErrorContains(t, err, "400", "one upgrade per session")
	status, _ := pollRequest(t, http.MethodGet, c.url, "")
	require.Equal(t, http.StatusBadRequest, status, "no polling after the upgrade")
	status, _ = c.post("3")
	require.Equal(t, http.StatusBadRequest, status)
	// ... and the session lives on, on its WebSocket.
	require.NoError(t, wsutil.WriteClientText(conn, []byte(`423["endpoint",{"endpointName":"updateClient","endpointArgs":{"isActive":false}}]`)))
	for {
		msg, err := wsutil.ReadServerText(rw)
		require.NoError(t, err)
		if bytes.HasPrefix(msg, []byte("433[")) {
			break
		}
	}
	// Nothing of the polling session is kept: its sid went with the
	// upgrade, the rest with the session.
	require.Equal(t, 1, tg.eio.Polled(), "the failed probe's session, still polling")
	conn.Close()
	require.Eventually(t, func() bool { return tg.roomMembers(tasks) == 1 }, 5*time.Second, 10*time.Millisecond)
}

// TestPollingRefusedWhileUpgrading: a CONNECT refused (an expired token)
// after the probe's "3probe", when the stock client has paused its polling
// and sends no GET until its upgrade is done: the refusal and the close
// come over the WebSocket once the client says "5", and the WebSocket
// closes after them. (The probe used to be dropped with the session, and
// such a client waited for a GET it never sent: CI saw the client
// library's test of this refusal time out.)
func TestPollingRefusedWhileUpgrading(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()
	c := openPolling(t, tg)
	conn, rw, letGo := c.probe(tg)
	require.Equal(t, []string{"6"}, letGo, "the GET let go with a noop")
	// The client pauses polling; its CONNECT (sent before the pause) is
	// refused.
	status, body := c.post(`40{"token":"` + token(t, "u1", -time.Minute) + `"}`)
	require.Equal(t, http.StatusOK, status, body)

	require.NoError(t, wsutil.WriteClientText(conn, []byte("5")))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg, err := wsutil.ReadServerText(rw)
	require.NoError(t, err, "the refusal comes over the WebSocket")
	require.True(t, strings.HasPrefix(string(msg), `44{"message":"token expired"`), string(msg))
	msg, err = wsutil.ReadServerText(rw)
	require.NoError(t, err)
	require.Equal(t, "1", string(msg), "then the close packet")
	_, err = wsutil.ReadServerText(rw)
	require.Error(t, err, "and the WebSocket closes")
	require.Eventually(t, func() bool { return tg.eio.Polled() == 0 }, 5*time.Second, 10*time.Millisecond, "nothing of the session is kept")
}

// TestPollingOrigin: every polling request passes the handshake's check:
// an Origin not allowed is refused (403), an allowed one is told it may
// read the answer (CORS).
func TestPollingOrigin(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.AllowedOrigins = []string{"https://app.example"} })
	get := func(origin string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, tg.url+pollPath, nil)
		require.NoError(t, err)
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	require.Equal(t, http.StatusForbidden, get("https://evil.example").StatusCode)
	require.Zero(t, tg.eio.Polled(), "no session opened")
	resp := get("https://app.example")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "https://app.example", resp.Header.Get("Access-Control-Allow-Origin"))
}

// TestPollingDrain: a gateway shutting down lets a waiting long-poll go
// at once (Run is not held by it), and the session ends with the others.
func TestPollingDrain(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.DrainGrace = 100 * time.Millisecond })
	c := openPolling(t, tg)
	c.connect("u1")
	waiting := make(chan string, 1)
	go func() {
		resp, err := http.Get(c.url)
		if err != nil {
			waiting <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		waiting <- string(b)
	}()
	require.Eventually(t, func() bool { return tg.eio.Waiting() == 1 }, 5*time.Second, time.Millisecond)
	start := time.Now()
	tg.cancel()
	select {
	case body := <-waiting:
		require.Contains(t, []string{"6", "1"}, body[len(body)-1:], body)
	case <-time.After(5 * time.Second):
		t.Fatal("the long-poll held on")
	}
	select {
	case err := <-tg.done:
		require.NoError(t, err)
		tg.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	require.Less(t, time.Since(start), 4*time.Second, "not held for the shutdown grace")
}
