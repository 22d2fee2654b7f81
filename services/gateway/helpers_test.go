package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
)

const testSecret = "test-secret-0123456789"

// env is one NATS server with stream ROOMS and the buckets, and the test's
// own connection to it (publisher and test responders).
type env struct {
	t   *testing.T
	srv *server.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s, nc, js := natstest.RunStack(t, proto.StoreConfig{})
	return &env{t: t, srv: s, nc: nc, js: js}
}

// testGateway is a gateway running on a random port.
type testGateway struct {
	*Gateway
	url    string
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func (e *env) startGateway(mod ...func(*Config)) *testGateway {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(e.t, err)
	reg := prometheus.NewRegistry()
	cfg := Config{
		NATSURL:    e.srv.ClientURL(),
		Listener:   ln,
		JWTSecret:  testSecret,
		Logger:     zerolog.Nop(),
		Registry:   reg,
		DrainGrace: 50 * time.Millisecond,
		// Subscriptions go with the last socket, as the tests check
		// (TestSubscriptionLinger tests lingering).
		SubscriptionLinger: -1,
	}
	for _, m := range mod {
		m(&cfg)
	}
	g, err := New(cfg)
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	tg := &testGateway{Gateway: g, url: "http://" + ln.Addr().String(), reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { tg.done <- g.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-tg.done:
		case <-time.After(15 * time.Second):
			e.t.Errorf("gateway did not stop")
		}
	})
	return tg
}

func (tg *testGateway) counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// token mints an HS256 token for user u expiring after ttl.
func token(t testing.TB, u string, ttl time.Duration) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject:   u,
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl)),
	}).SignedString([]byte(testSecret))
	require.NoError(t, err)
	return tok
}

// answerRoomState answers roomstate.get and roomstate.getmany from states
// (null for others).
func (e *env) answerRoomState(states map[string]*proto.RoomState) {
	e.t.Helper()
	var mu sync.Mutex
	e.answerRoomStateFunc(func(name string) *proto.RoomState {
		mu.Lock()
		defer mu.Unlock()
		return states[name]
	})
}

// answerRoomStateFunc answers roomstate.get and roomstate.getmany with
// state(room name).
func (e *env) answerRoomStateFunc(state func(name string) *proto.RoomState) {
	e.t.Helper()
	sub, err := e.nc.Subscribe(proto.SubjectRoomStateGet, func(m *nats.Msg) {
		var a proto.RoomArgs
		_ = json.Unmarshal(m.Data, &a)
		b, _ := json.Marshal(state(a.RoomName))
		_ = m.Respond(b)
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	many, err := e.nc.Subscribe(proto.SubjectRoomStateGetMany, func(m *nats.Msg) {
		var a proto.RoomStatesArgs
		_ = json.Unmarshal(m.Data, &a)
		res := proto.RoomStatesResult{States: map[string]*proto.RoomState{}}
		for _, name := range a.RoomNames {
			res.States[name] = state(name)
		}
		b, _ := json.Marshal(res)
		_ = m.Respond(b)
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = many.Unsubscribe() })
	require.NoError(e.t, e.nc.Flush())
}

// answerAuthz answers authz.join with allow(user, room).
func (e *env) answerAuthz(allow func(user, room string) bool) *nats.Subscription {
	e.t.Helper()
	sub, err := e.nc.Subscribe(proto.SubjectAuthzJoin, func(m *nats.Msg) {
		var q proto.AuthzJoinRequest
		_ = json.Unmarshal(m.Data, &q)
		b, _ := json.Marshal(proto.AuthzJoinReply{Allow: allow(q.UserID, q.RoomName)})
		_ = m.Respond(b)
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(e.t, e.nc.Flush())
	return sub
}

// publish stores an envelope in room r through JetStream and returns its
// bytes and stream sequence.
func (e *env) publish(r proto.Room, id string, updatedAt int64) ([]byte, uint64) {
	e.t.Helper()
	b := envelopeFor(r, id, updatedAt)
	ack, err := e.js.Publish(context.Background(), proto.Subjects{}.Publish(r), b)
	require.NoError(e.t, err)
	return b, ack.Sequence
}

// envelopeFor is a valid envelope for room r: an update of an event allowed
// there (new-message in a chat), so the envelope gate lets it through.
func envelopeFor(r proto.Room, id string, updatedAt int64) []byte {
	if r.Kind() == proto.KindChat {
		return []byte(fmt.Sprintf(`{"event":"new-message","id":%q,"updatedAt":%d,"data":{"text":"m %d"}}`, id, updatedAt, updatedAt))
	}
	ev := map[proto.RoomKind]proto.Event{
		proto.KindUser: proto.EventUpdateUser, proto.KindOrg: proto.EventUpdateOrganization, proto.KindBoard: proto.EventUpdateBoard,
		proto.KindBoardTasks: proto.EventUpdateTask, proto.KindBoardSprints: proto.EventUpdateSprint,
	}[r.Kind()]
	return []byte(fmt.Sprintf(`{"event":%q,"id":%q,"updatedAt":%d,"diff":{"title":"t %d"}}`, ev, id, updatedAt, updatedAt))
}

// clientRoomOf is user u's client room c.
func clientRoomOf(t testing.TB, u, c string) proto.Room {
	t.Helper()
	r, err := proto.ClientRoom(u, c)
	require.NoError(t, err)
	return r
}

func mustRoom(t testing.TB, name string) proto.Room {
	t.Helper()
	r, err := proto.ParseRoom(name)
	require.NoError(t, err)
	return r
}

// client is a minimal Socket.IO v5 client over gobwas/ws, enough to test
// the wire itself.
type client struct {
	t      testing.TB
	conn   net.Conn
	rd     io.Reader
	wmu    sync.Mutex
	frames chan string // Engine.IO packets other than acks and events
	acks   chan string
	events chan string
	closed chan struct{}
	nextID int
	pong   bool
}

const wsPath = "/socket.io/?EIO=4&transport=websocket"

// dial opens a WebSocket to the gateway; query is appended to the path.
func dial(t testing.TB, tg *testGateway, query string, hdr http.Header, opts ...func(*client)) (*client, error) {
	t.Helper()
	return dialWith(t, tg, query, hdr, nil, opts...)
}

func dialWith(t testing.TB, tg *testGateway, query string, hdr http.Header, dmod func(*ws.Dialer), opts ...func(*client)) (*client, error) {
	t.Helper()
	d := ws.Dialer{Timeout: 5 * time.Second}
	if dmod != nil {
		dmod(&d)
	}
	if hdr != nil {
		d.Header = ws.HandshakeHeaderHTTP(hdr)
	}
	conn, br, _, err := d.Dial(context.Background(), "ws"+strings.TrimPrefix(tg.url, "http")+wsPath+query)
	if err != nil {
		return nil, err
	}
	c := &client{t: t, conn: conn, rd: conn, frames: make(chan string, 1024), acks: make(chan string, 1024),
		events: make(chan string, 100000), closed: make(chan struct{}), pong: true}
	if br != nil {
		c.rd = io.MultiReader(br, conn)
	}
	for _, o := range opts {
		o(c)
	}
	t.Cleanup(func() { _ = conn.Close() })
	go c.read()
	return c, nil
}

// withoutReading makes a client that never reads: the slow consumer.
func withoutReading(c *client) { c.rd = nil }

// smallReceiveBuffer dials with a tiny TCP receive buffer, so that a client
// that stops reading backs up into the server quickly.
func smallReceiveBuffer(d *ws.Dialer) {
	d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}
}

func (c *client) read() {
	defer close(c.closed)
	if c.rd == nil {
		<-make(chan struct{}) // never reads; closed by the test's cleanup via conn
	}
	for {
		b, op, err := wsutil.ReadServerData(struct{ io.ReadWriter }{rw{c.rd, c.conn}})
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		s := string(b)
		switch {
		case s == "2" && c.pong:
			c.send("3")
		case strings.HasPrefix(s, "43"):
			c.acks <- s
		case strings.HasPrefix(s, "42"):
			c.events <- s
		default:
			c.frames <- s
		}
	}
}

type rw struct {
	io.Reader
	w io.Writer
}

func (r rw) Write(p []byte) (int, error) { return r.w.Write(p) }

func (c *client) send(s string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = wsutil.WriteClientText(c.conn, []byte(s))
}

func (c *client) next() string {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case <-c.closed:
		select {
		case f := <-c.frames:
			return f
		default:
		}
		c.t.Fatalf("socket closed while waiting for a frame")
	case <-time.After(5 * time.Second):
		c.t.Fatalf("no frame within 5s")
	}
	return ""
}

// waitClosed waits for the server to close the socket.
func (c *client) waitClosed() {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(5 * time.Second):
		c.t.Fatalf("socket not closed within 5s")
	}
}

// connect dials, reads the open packet and sends CONNECT with auth; it
// returns the client and the server's answer to CONNECT.
func connect(t testing.TB, tg *testGateway, auth string) (*client, string) {
	t.Helper()
	c, err := dial(t, tg, "", nil)
	require.NoError(t, err)
	open := c.next()
	require.True(t, strings.HasPrefix(open, "0{"), open)
	c.send("40" + auth)
	return c, c.next()
}

// connectUser connects as user u with a fresh token.
func connectUser(t testing.TB, tg *testGateway, u string, opts ...func(*client)) *client {
	t.Helper()
	c, err := dial(t, tg, "", nil, opts...)
	require.NoError(t, err)
	if c.rd == nil {
		// A non-reading client cannot see the handshake; trust it.
		c.send(`40{"token":"` + token(t, u, time.Hour) + `"}`)
		return c
	}
	require.True(t, strings.HasPrefix(c.next(), "0{"))
	c.send(`40{"token":"` + token(t, u, time.Hour) + `"}`)
	got := c.next()
	require.True(t, strings.HasPrefix(got, `40{"sid":"`), got)
	return c
}

type ack struct {
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data"`
	Error *proto.Error    `json:"error"`
}

// call emits an endpoint call with an ack id and waits for its ack.
func (c *client) call(name proto.EndpointName, args any) ack {
	c.t.Helper()
	b, err := json.Marshal(map[string]any{"endpointName": name, "endpointArgs": args})
	require.NoError(c.t, err)
	return c.callRaw(string(b))
}

func (c *client) callRaw(arg string) ack {
	c.t.Helper()
	id := c.nextID
	c.nextID++
	c.send("42" + strconv.Itoa(id) + `["endpoint",` + arg + "]")
	select {
	case a := <-c.acks:
		prefix := "43" + strconv.Itoa(id) + "["
		require.True(c.t, strings.HasPrefix(a, prefix), "ack %q for id %d", a, id)
		var out ack
		require.NoError(c.t, json.Unmarshal([]byte(strings.TrimSuffix(strings.TrimPrefix(a, prefix), "]")), &out))
		return out
	case <-c.closed:
		c.t.Fatalf("socket closed while waiting for ack %d", id)
	case <-time.After(5 * time.Second):
		c.t.Fatalf("no ack %d within 5s", id)
	}
	return ack{}
}

func (c *client) mustOK(name proto.EndpointName, args any) json.RawMessage {
	c.t.Helper()
	a := c.call(name, args)
	require.True(c.t, a.OK, "%s %v: %+v", name, args, a.Error)
	return a.Data
}

func (c *client) mustFail(code proto.Code, name proto.EndpointName, args any) *proto.Error {
	c.t.Helper()
	a := c.call(name, args)
	require.False(c.t, a.OK, "%s %v succeeded: %s", name, args, a.Data)
	require.Equal(c.t, code, a.Error.Code, a.Error.Message)
	return a.Error
}

// broadcast waits for the next broadcast event.
func (c *client) broadcast() proto.Broadcast {
	c.t.Helper()
	b, _ := c.broadcastOffset()
	return b
}

// broadcastOffset waits for the next broadcast event, and returns it with
// its offset ("" when it carries none).
func (c *client) broadcastOffset() (proto.Broadcast, string) {
	c.t.Helper()
	select {
	case e := <-c.events:
		prefix := `42["broadcast",`
		require.True(c.t, strings.HasPrefix(e, prefix), e)
		var args []json.RawMessage
		require.NoError(c.t, json.Unmarshal([]byte(e[2:]), &args), e)
		require.True(c.t, len(args) == 2 || len(args) == 3, e)
		var b proto.Broadcast
		require.NoError(c.t, json.Unmarshal(args[1], &b))
		offset := ""
		if len(args) == 3 {
			require.NoError(c.t, json.Unmarshal(args[2], &offset), e)
		}
		return b, offset
	case <-time.After(5 * time.Second):
		c.t.Fatalf("no broadcast within 5s")
	}
	return proto.Broadcast{}, ""
}

// noBroadcast checks that no broadcast is waiting after a round trip that
// any earlier broadcast would have preceded.
func (c *client) noBroadcast() {
	c.t.Helper()
	c.call(proto.EndpointUpdateClient, map[string]any{"isActive": true})
	select {
	case e := <-c.events:
		c.t.Fatalf("unexpected broadcast %s", e)
	default:
	}
}

func bytesReader(b []byte) io.Reader { return strings.NewReader(string(b)) }

// socketOn is a socket on conn as startSocket makes one (its open packet
// sent already), read by nobody: the test feeds it.
func socketOn(g *Gateway, conn net.Conn) *socket {
	if g.wsOpts.SendQueueBytes == 0 {
		g.transportSetup()
	}
	s := newSocket(g, "")
	s.ws.Init(engineio.Upgraded{Conn: conn, Opened: true}, s, &g.wsOpts)
	return s
}
