package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway"
	"github.com/roomcast/roomcast/services/roomstate"
	"github.com/roomcast/roomcast/services/sync/backfill"
)

// The failure tests: a 3-node NATS cluster with stream ROOMS at 3 replicas,
// two gateways, two replicas each of roomstate and sync, a domain service
// publishing task events, and clients on both gateways that apply
// broadcasts while their seq chain holds and resync with getChangesSince
// when it breaks. Whatever is stopped, every client ends with exactly the
// state the publisher was acknowledged for.

const failSecret = "failover-test-secret"

var failBoard = "board-f1"

type cluster struct {
	t        *testing.T
	servers  []*server.Server
	urls     string
	store    proto.StoreConfig
	gateways []*runningGateway
	services map[string]context.CancelFunc
	svcDone  map[string]chan error
	admin    *nats.Conn
	js       jetstream.JetStream
}

type runningGateway struct {
	url  string
	stop context.CancelFunc
	done chan error
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, store: proto.StoreConfig{Replicas: 3}, services: map[string]context.CancelFunc{}, svcDone: map[string]chan error{}}
	c.servers = natstest.RunCluster(t, 3)
	var urls []string
	for _, s := range c.servers {
		urls = append(urls, s.ClientURL())
	}
	c.urls = strings.Join(urls, ",")
	c.admin = c.connect("admin")
	js, err := jetstream.New(c.admin)
	require.NoError(t, err)
	c.js = js
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return proto.Ensure(ctx, js, c.store) == nil
	}, 30*time.Second, 200*time.Millisecond, "stream and buckets at 3 replicas")

	// The domain service's authorizer: every user may join every board.
	authz := c.connect("authz")
	_, err = authz.QueueSubscribe(proto.SubjectAuthzJoin, "authz", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"allow":true}`))
	})
	require.NoError(t, err)
	require.NoError(t, authz.Flush())

	for i := range 2 {
		c.startGateway(i)
	}
	for _, name := range []string{"roomstate-1", "roomstate-2", "sync-1", "sync-2"} {
		c.startService(name)
	}
	return c
}

func (c *cluster) connect(name string) *nats.Conn {
	nc, err := nats.Connect(c.urls, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(c.t, err)
	c.t.Cleanup(nc.Close)
	return nc
}

func natsOptions() []nats.Option {
	return []nats.Option{nats.ReconnectWait(100 * time.Millisecond), nats.ReconnectJitter(0, 0)}
}

func (c *cluster) startGateway(i int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	g := &runningGateway{url: "ws://" + ln.Addr().String() + "/socket.io/?EIO=4&transport=websocket", stop: cancel, done: make(chan error, 1)}
	cfg := gateway.Config{
		Listener: ln, NATSURL: c.urls, NATSOptions: natsOptions(), Store: c.store,
		JWTSecret: failSecret, GatewayID: fmt.Sprintf("gw%d", i+1), DrainGrace: 300 * time.Millisecond,
		Logger: zerolog.Nop(), Registry: prometheus.NewRegistry(),
	}
	go func() { g.done <- gateway.Run(ctx, cfg) }()
	c.t.Cleanup(func() { cancel(); <-g.done })
	c.gateways = append(c.gateways, g)
}

func (c *cluster) startService(name string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	reg, log := prometheus.NewRegistry(), zerolog.Nop()
	if strings.HasPrefix(name, "roomstate") {
		cfg := roomstate.Config{NATSURL: c.urls, NATSOptions: natsOptions(), Store: c.store, SkipEnsure: true, Logger: log, Registry: reg}
		go func() { done <- roomstate.Run(ctx, cfg) }()
	} else {
		cfg := backfill.Config{NATSURL: c.urls, NATSOptions: natsOptions(), Store: c.store, Logger: log, Registry: reg}
		go func() { done <- backfill.Run(ctx, cfg) }()
	}
	c.services[name], c.svcDone[name] = cancel, done
	c.t.Cleanup(func() { c.stopService(name) })
}

func (c *cluster) stopService(name string) {
	if cancel := c.services[name]; cancel != nil {
		cancel()
		<-c.svcDone[name]
		delete(c.services, name)
	}
}

// leaderOfRooms is the server that leads stream ROOMS.
func (c *cluster) leaderOfRooms() *server.Server {
	c.t.Helper()
	var leader string
	require.Eventually(c.t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := c.js.Stream(ctx, proto.StreamRooms)
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil || info.Cluster == nil {
			return false
		}
		leader = info.Cluster.Leader
		return leader != ""
	}, 20*time.Second, 100*time.Millisecond)
	for _, s := range c.servers {
		if s.Name() == leader {
			return s
		}
	}
	c.t.Fatalf("leader %q is none of the servers", leader)
	return nil
}

// storedTasks folds what stream ROOMS holds for room into the latest change
// of each task: the truth every client must end with (it holds everything the
// publisher was acknowledged for, and perhaps a last change whose ack was
// still on its way when publishing stopped).
func (c *cluster) storedTasks(t *testing.T, room proto.Room) (map[string]task, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := c.js.Stream(ctx, proto.StreamRooms)
	require.NoError(t, err)
	out := map[string]task{}
	var last uint64
	for {
		// The next message on the room's subject from last+1: a stream
		// read that needs no consumer.
		m, err := stream.GetMsg(ctx, last+1, jetstream.WithGetMsgSubject(proto.Subjects{}.Publish(room)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, last
		}
		require.NoError(t, err)
		env, err := proto.ParseEnvelope(m.Data)
		require.NoError(t, err)
		out[env.ID] = task{updatedAt: env.UpdatedAt, deleted: env.Event == proto.EventDeleteTask}
		last = m.Sequence
	}
}

// task is what a client (or the truth) knows of one task.
type task struct {
	updatedAt int64
	deleted   bool
}

// publisher is a domain service: it publishes task events to board-f1-tasks
// and keeps, as the truth, the latest acknowledged change of each task.
type publisher struct {
	t     *testing.T
	pub   *proto.Publisher
	room  proto.Room
	mu    sync.Mutex
	truth map[string]task
	last  uint64 // highest acknowledged seq
	n     int
	base  int64
}

func newPublisher(t *testing.T, c *cluster) *publisher {
	js, err := jetstream.New(c.connect("domain"))
	require.NoError(t, err)
	room, err := proto.BoardTasksRoom("f1")
	require.NoError(t, err)
	return &publisher{t: t, pub: proto.NewPublisher(js, proto.Subjects{}), room: room, truth: map[string]task{}, base: time.Now().UnixMilli()}
}

// publish sends the next event, retrying (same bytes, so the same
// Nats-Msg-Id) until acknowledged or ctx ends.
func (p *publisher) publish(ctx context.Context) error {
	p.n++
	id := fmt.Sprintf("t%d", p.n%12)
	at := p.base + int64(p.n) // ms, strictly increasing
	env := proto.Envelope{ID: id, UpdatedAt: at}
	switch p.n % 5 {
	case 0:
		env.Event = proto.EventDeleteTask
	case 1:
		env.Event, env.Data = proto.EventCreateTask, json.RawMessage(fmt.Sprintf(`{"title":"task %d"}`, p.n))
	default:
		env.Event, env.Diff = proto.EventUpdateTask, json.RawMessage(fmt.Sprintf(`{"n":%d}`, p.n))
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := p.pub.Publish(actx, p.room, env)
		cancel()
		if err == nil {
			p.mu.Lock()
			p.truth[id] = task{updatedAt: at, deleted: env.Event == proto.EventDeleteTask}
			p.last = max(p.last, ack.Sequence)
			p.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("event %d never acknowledged: %w", p.n, err)
		}
	}
}

// run publishes at about rate per second until ctx ends.
func (p *publisher) run(ctx context.Context, rate int) chan error {
	done := make(chan error, 1)
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				done <- nil
				return
			case <-tick.C:
				if err := p.publish(ctx); err != nil && ctx.Err() == nil {
					done <- err
					return
				}
			}
		}
	}()
	return done
}

func (p *publisher) snapshot() (map[string]task, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]task, len(p.truth))
	for k, v := range p.truth {
		out[k] = v
	}
	return out, p.last
}

// client is a frontend: it applies broadcasts while seq and prevSeq chain,
// and resyncs from its last seq with getChangesSince otherwise. When its
// gateway goes away it connects to the next one and rejoins.
type client struct {
	t        *testing.T
	name     string
	gateways []string
	gw       int

	mu       sync.Mutex
	state    map[string]task
	lastSeq  uint64
	received int // broadcasts applied
	resyncs  int
	switches int // times it moved to another gateway
	conn     *sioclient.Conn
}

func newClient(t *testing.T, name string, gateways []string, first int) *client {
	return &client{t: t, name: name, gateways: gateways, gw: first, state: map[string]task{}}
}

func (cl *client) token() string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": cl.name, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte(failSecret))
	require.NoError(cl.t, err)
	return tok
}

// connect dials its current gateway, or the next ones, and joins the board.
func (cl *client) connect(ctx context.Context) error {
	var err error
	for range 2 * len(cl.gateways) {
		var c *sioclient.Conn
		c, err = sioclient.Dial(ctx, sioclient.Options{URL: cl.gateways[cl.gw], Token: cl.token(), ClientID: cl.name, Timeout: 3 * time.Second})
		if err == nil {
			if _, err = c.Call(string(proto.EndpointAddToRoom), proto.RoomArgs{RoomName: failBoard}, nil); err == nil {
				cl.mu.Lock()
				cl.conn = c
				cl.mu.Unlock()
				return nil
			}
			_ = c.Close()
		}
		cl.gw = (cl.gw + 1) % len(cl.gateways)
		cl.switches++
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return err
}

// run reads until ctx ends, reconnecting (and resyncing) when the socket
// is lost.
func (cl *client) run(ctx context.Context) chan error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if c := cl.current(); c != nil {
				_ = c.Close()
			}
		}()
		stop := context.AfterFunc(ctx, func() {
			if c := cl.current(); c != nil {
				_ = c.SetDeadline(time.Unix(1, 0))
			}
		})
		defer stop()
		for ctx.Err() == nil {
			c := cl.current()
			if c == nil {
				if err := cl.connect(ctx); err != nil {
					done <- fmt.Errorf("%s: reconnect: %w", cl.name, err)
					return
				}
				if err := cl.resync(cl.current()); err != nil && ctx.Err() == nil && !lostConnection(err) {
					done <- fmt.Errorf("%s: resync after reconnect: %w", cl.name, err)
					return
				}
				continue
			}
			msg, err := c.Next()
			if err != nil {
				cl.mu.Lock()
				cl.conn = nil
				cl.mu.Unlock()
				_ = c.Close()
				continue
			}
			if err := cl.handle(c, msg); err != nil && ctx.Err() == nil {
				if lostConnection(err) {
					// The gateway went away mid-resync: reconnect, resync again.
					cl.mu.Lock()
					cl.conn = nil
					cl.mu.Unlock()
					_ = c.Close()
					continue
				}
				done <- fmt.Errorf("%s: %w", cl.name, err)
				return
			}
		}
		done <- nil
	}()
	return done
}

// lostConnection tells a socket that went away (a client reconnects) from
// an answer it got (a client gives up on those it cannot retry).
func lostConnection(err error) bool {
	var ne net.Error
	return errors.Is(err, sioclient.ErrClosed) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}

func (cl *client) resyncCount() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.resyncs
}

func (cl *client) current() *sioclient.Conn {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.conn
}

// handle applies one message; a broken seq chain resyncs.
func (cl *client) handle(c *sioclient.Conn, msg []byte) error {
	b, ok := decodeBroadcast(msg)
	if !ok {
		return nil
	}
	cl.mu.Lock()
	last := cl.lastSeq
	cl.mu.Unlock()
	switch {
	case b.Seq <= last:
		return nil // already applied (a resync got there first)
	case b.PrevSeq != last:
		return cl.resync(c)
	}
	env, err := proto.ParseEnvelope(b.Data)
	if err != nil {
		return err
	}
	cl.mu.Lock()
	cl.state[env.ID] = task{updatedAt: env.UpdatedAt, deleted: env.Event == proto.EventDeleteTask}
	cl.lastSeq = b.Seq
	cl.received++
	cl.mu.Unlock()
	return nil
}

// resync asks for every change after the last applied seq, following the
// continuation cursors; broadcasts arriving meanwhile are applied after. An
// unavailable answer (a service or NATS node failing over) is retried with
// a backoff, as a real client does.
func (cl *client) resync(c *sioclient.Conn) error {
	var err error
	for wait := 50 * time.Millisecond; wait < 10*time.Second; wait *= 2 {
		if err = cl.resyncOnce(c); err == nil || !strings.HasPrefix(err.Error(), string(proto.CodeUnavailable)+":") {
			return err
		}
		<-time.After(wait)
	}
	return err
}

func (cl *client) resyncOnce(c *sioclient.Conn) error {
	cl.mu.Lock()
	after := cl.lastSeq
	cl.resyncs++
	cl.mu.Unlock()
	var pending [][]byte
	for {
		args := proto.ChangesArgs{RoomName: failBoard + "-tasks", Cursor: proto.Cursor{AfterSeq: &after}}
		ack, err := c.Call(string(proto.EndpointGetChangesSince), args, func(m []byte) { pending = append(pending, append([]byte(nil), m...)) })
		if err != nil {
			return err
		}
		var res proto.ChangesResult
		if err := json.Unmarshal(ack.Data, &res); err != nil {
			return err
		}
		if !res.Complete {
			return errors.New("history no longer reaches back: a whole refetch would be needed")
		}
		cl.mu.Lock()
		for _, ch := range res.Changes {
			cl.state[ch.ID] = task{updatedAt: ch.UpdatedAt, deleted: ch.Deleted}
			cl.lastSeq = max(cl.lastSeq, ch.Seq)
		}
		cl.mu.Unlock()
		if res.Next == nil || res.Next.AfterSeq == nil {
			break
		}
		after = *res.Next.AfterSeq
		cl.mu.Lock()
		cl.lastSeq = max(cl.lastSeq, after)
		cl.mu.Unlock()
	}
	for _, m := range pending {
		if err := cl.handle(c, m); err != nil {
			return err
		}
	}
	return nil
}

// decodeBroadcast decodes 42["broadcast",{…}], and 42["broadcast",{…},"N"]
// with connection state recovery's offset after the payload.
func decodeBroadcast(msg []byte) (proto.Broadcast, bool) {
	var b proto.Broadcast
	rest, ok := strings.CutPrefix(string(msg), `42[`)
	if !ok {
		return b, false
	}
	var args []json.RawMessage
	if json.Unmarshal([]byte("["+rest), &args) != nil || len(args) < 2 || string(args[0]) != `"broadcast"` {
		return b, false
	}
	return b, json.Unmarshal(args[1], &b) == nil
}

func (cl *client) snapshot() (map[string]task, uint64, int) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out := make(map[string]task, len(cl.state))
	for k, v := range cl.state {
		out[k] = v
	}
	return out, cl.lastSeq, cl.received
}

// live returns the view of a task list a user sees: deleted tasks gone.
func live(m map[string]task) map[string]int64 {
	out := map[string]int64{}
	for id, tk := range m {
		if !tk.deleted {
			out[id] = tk.updatedAt
		}
	}
	return out
}

// scenario runs clients on both gateways and a publisher, calls disrupt
// midway, and checks that every client converges on the truth.
func scenario(t *testing.T, c *cluster, disrupt func()) []*client {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := newPublisher(t, c)
	urls := []string{c.gateways[0].url, c.gateways[1].url}
	var clients []*client
	var done []chan error
	cctx, stopClients := context.WithCancel(ctx)
	defer stopClients()
	for i := range 6 {
		cl := newClient(t, fmt.Sprintf("u%d", i), urls, i%2)
		require.NoError(t, cl.connect(ctx))
		clients = append(clients, cl)
		done = append(done, cl.run(cctx))
	}
	pctx, stopPublishing := context.WithCancel(ctx)
	pubDone := p.run(pctx, 100)

	waitSeq := func(seq uint64, why string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			behind := ""
			for i, cl := range clients {
				if _, last, _ := cl.snapshot(); last < seq {
					behind += fmt.Sprintf(" %s at %d (%d resyncs)", cl.name, last, cl.resyncCount())
					select {
					case err := <-done[i]:
						t.Fatalf("%s: client %s stopped: %v", why, cl.name, err)
					default:
					}
				}
			}
			if behind == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: want seq %d, behind:%s", why, seq, behind)
			}
		}
	}
	require.Eventually(t, func() bool { _, last := p.snapshot(); return last >= 20 }, 20*time.Second, 10*time.Millisecond)
	_, before := p.snapshot()
	disrupt()
	require.Eventually(t, func() bool { _, last := p.snapshot(); return last >= before+40 }, 30*time.Second, 10*time.Millisecond,
		"the publisher is acknowledged again after the disruption")
	_, after := p.snapshot()
	waitSeq(after, "every client keeps receiving after the disruption")
	// A client whose request was lost with a stopped node waits the
	// gateway's 2 s, then catches up by resync alone while the publisher
	// runs on; broadcasts must reach it again too: publishing goes on until
	// each client has applied one since it caught up.
	caughtUp := make([]int, len(clients))
	for i, cl := range clients {
		_, _, caughtUp[i] = cl.snapshot()
	}
	require.Eventually(t, func() bool {
		for i, cl := range clients {
			if _, _, received := cl.snapshot(); received <= caughtUp[i] {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond, "every client applies broadcasts again after the disruption")
	stopPublishing()
	require.NoError(t, <-pubDone)

	acked, _ := p.snapshot()
	truth, last := c.storedTasks(t, p.room)
	for id, tk := range acked {
		require.GreaterOrEqual(t, truth[id].updatedAt, tk.updatedAt, "acknowledged change of %s is stored", id)
	}
	waitSeq(last, "every client reaches the last stored event")
	// A last resync, as a client does when it comes back to a page: nothing
	// acknowledged may be missing.
	stopClients()
	for i, d := range done {
		require.NoError(t, <-d, clients[i].name)
	}
	for _, cl := range clients {
		state, _, received := cl.snapshot()
		require.Equal(t, live(truth), live(state), "%s converges on what is stored", cl.name)
		require.Positive(t, received, cl.name)
	}
	return clients
}

func TestFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	c := startCluster(t)

	t.Run("roomstate and sync replicas stopped and restarted", func(t *testing.T) {
		p := newPublisher(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for range 5 {
			require.NoError(t, p.publish(ctx))
		}
		cl := newClient(t, "q1", []string{c.gateways[0].url}, 0)
		require.NoError(t, cl.connect(ctx))
		ask := func(why string) {
			t.Helper()
			_, want := p.snapshot()
			require.Eventually(t, func() bool {
				ack, err := cl.conn.Call(string(proto.EndpointGetRoomState), proto.RoomArgs{RoomName: failBoard + "-tasks"}, nil)
				var st proto.RoomState
				return err == nil && json.Unmarshal(ack.Data, &st) == nil && st.Seq == want
			}, 10*time.Second, 20*time.Millisecond, "getRoomState: %s", why)
			zero := uint64(0)
			for range 10 {
				ack, err := cl.conn.Call(string(proto.EndpointGetChangesSince),
					proto.ChangesArgs{RoomName: failBoard + "-tasks", Cursor: proto.Cursor{AfterSeq: &zero}}, nil)
				require.NoError(t, err, "getChangesSince: %s", why)
				require.Contains(t, string(ack.Data), `"complete":true`)
			}
		}
		for _, pair := range [][2]string{{"roomstate-1", "sync-1"}, {"roomstate-2", "sync-2"}} {
			for _, name := range pair {
				c.stopService(name)
			}
			require.NoError(t, p.publish(ctx))
			ask("with " + pair[0] + " and " + pair[1] + " stopped")
			for _, name := range pair {
				c.startService(name)
			}
		}
		_ = cl.conn.Close()
	})

	t.Run("a gateway stopped", func(t *testing.T) {
		clients := scenario(t, c, func() {
			g := c.gateways[0]
			g.stop()
			require.NoError(t, <-g.done, "the gateway drains and stops cleanly")
			g.done <- nil // for the cleanup
		})
		moved := 0
		for _, cl := range clients {
			if cl.switches > 0 {
				moved++
			}
		}
		require.GreaterOrEqual(t, moved, 3, "the stopped gateway's clients moved to the other one")
	})

	t.Run("a NATS node stopped", func(t *testing.T) {
		// The first gateway is gone: both urls lead to the second, which
		// carries every client through the loss of the stream's leader.
		c.gateways[0] = c.gateways[1]
		scenario(t, c, func() {
			leader := c.leaderOfRooms()
			leader.Shutdown()
			leader.WaitForShutdown()
		})
	})
}
