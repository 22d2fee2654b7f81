package main

import (
	"context"
	"encoding/json"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/roomstate"
	"github.com/roomcast/roomcast/services/sync/backfill"
)

var roles = []string{"admin", "gateway", "roomstate", "sync", "service", "sys"}

// setPasswords gives every role a password through the environment, as
// nats-server reads them from accounts.conf.
func setPasswords(t *testing.T) {
	for _, r := range roles {
		t.Setenv("ROOMCAST_"+strings.ToUpper(r)+"_PASSWORD", "pw-"+r)
	}
}

// deployConfigs are the nats-server configurations under deploy/ that a
// server runs: the single node and the three cluster nodes.
func deployConfigs(t *testing.T) []string {
	t.Helper()
	nodes, err := filepath.Glob("../../deploy/nats/cluster/*.conf")
	require.NoError(t, err)
	require.Len(t, nodes, 3)
	return append([]string{"../../deploy/nats/single.conf"}, nodes...)
}

// Every NATS configuration under deploy/ parses with nats-server's own
// parser, and every one carries the same least-privilege roles: a config
// without authorization would let anyone who reaches it publish anything.
func TestDeployNATSConfigsParse(t *testing.T) {
	setPasswords(t)
	single, err := server.ProcessConfigFile("../../deploy/nats/single.conf")
	require.NoError(t, err)
	require.True(t, single.JetStream)

	names := map[string]bool{}
	for _, f := range deployConfigs(t)[1:] {
		o, err := server.ProcessConfigFile(f)
		require.NoError(t, err, f)
		require.True(t, o.JetStream, f)
		require.Equal(t, "roomcast", o.Cluster.Name, f)
		require.Len(t, o.Routes, 3, f)
		names[o.ServerName] = true
	}
	require.Len(t, names, 3, "distinct server names")

	want := usersOf(t, single)
	require.ElementsMatch(t, roles, slices.Collect(maps.Keys(want)), "single.conf has every role")
	for _, f := range deployConfigs(t) {
		o, err := server.ProcessConfigFile(f)
		require.NoError(t, err, f)
		require.Equal(t, "SYS", o.SystemAccount, f)
		require.Equal(t, want, usersOf(t, o), "%s: the same roles as every other config", f)
		for user, u := range usersOf(t, o) {
			if user != "sys" {
				require.NotNil(t, u.Permissions, "%s: %s has permissions", f, user)
			}
		}
	}
}

type deployUser struct {
	Account     string
	Permissions *server.Permissions
}

// usersOf is a config's users: account and permissions by name.
func usersOf(t *testing.T, o *server.Options) map[string]deployUser {
	t.Helper()
	users := map[string]deployUser{}
	for _, u := range o.Users {
		require.NotEmpty(t, u.Password, u.Username)
		users[u.Username] = deployUser{u.Account.Name, u.Permissions}
	}
	return users
}

// permServer starts an in-process server from a deploy configuration
// (without its cluster, monitoring and fixed ports).
func permServer(t *testing.T, file string) *server.Server {
	t.Helper()
	setPasswords(t)
	o, err := server.ProcessConfigFile(file)
	require.NoError(t, err)
	o.Host, o.Port, o.HTTPPort = "127.0.0.1", -1, 0
	o.Cluster, o.Routes = server.ClusterOpts{}, nil
	o.StoreDir = t.TempDir()
	o.NoLog, o.NoSigs = true, true
	s, err := server.NewServer(o)
	require.NoError(t, err)
	s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(s.Shutdown)
	return s
}

// roleConn connects as a role and collects the permission violations the
// server reports to it.
type roleConn struct {
	*nats.Conn
	js         jetstream.JetStream
	violations chan string
}

func connectAs(t *testing.T, s *server.Server, role string) roleConn {
	t.Helper()
	v := make(chan string, 64)
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(role, "pw-"+role),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case v <- err.Error():
			default:
			}
		}))
	require.NoError(t, err, role)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return roleConn{nc, js, v}
}

// refused asserts that the server reports a permission violation for
// subject after do.
func (c roleConn) refused(t *testing.T, subject string, do func() error) {
	t.Helper()
	_ = do()
	_ = c.Flush()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case v := <-c.violations:
			if strings.Contains(strings.ToLower(v), "permissions violation") && strings.Contains(v, subject) {
				return
			}
		case <-deadline:
			t.Fatalf("no permission violation for %q", subject)
		}
	}
}

// TestDeployPermissions runs each role against a server started from each
// deploy configuration: what the role needs is allowed, the rest refused.
func TestDeployPermissions(t *testing.T) {
	for _, f := range deployConfigs(t) {
		t.Run(filepath.Base(f), func(t *testing.T) { checkPermissions(t, permServer(t, f)) })
	}
}

func checkPermissions(t *testing.T, s *server.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	room, _ := proto.BoardTasksRoom("b1")
	subjects := proto.Subjects{}

	admin := connectAs(t, s, "admin")
	require.NoError(t, proto.Ensure(ctx, admin.js, proto.StoreConfig{}), "admin ensures stream and buckets")

	gateway := connectAs(t, s, "gateway")
	service := connectAs(t, s, "service")
	rs := connectAs(t, s, "roomstate")
	sy := connectAs(t, s, "sync")

	// The gateway listens to live broadcasts.
	live := make(chan *nats.Msg, 4)
	_, err := gateway.ChanSubscribe(subjects.Live(room), live)
	require.NoError(t, err)
	require.NoError(t, gateway.Flush())

	// A domain service publishes an event and it is stored and re-published.
	pub := proto.NewPublisher(service.js, subjects)
	env := proto.Envelope{Event: proto.EventDeleteTask, ID: "t1", UpdatedAt: 5}
	ack, err := pub.Publish(ctx, room, env)
	require.NoError(t, err, "service publishes to rooms.>")
	select {
	case m := <-live:
		require.Equal(t, "1", m.Header.Get("Nats-Sequence"))
	case <-time.After(5 * time.Second):
		t.Fatal("gateway did not receive the broadcast")
	}
	require.EqualValues(t, 1, ack.Sequence)

	// The service answers authz.join; the gateway asks.
	_, err = service.Subscribe(proto.SubjectAuthzJoin, func(m *nats.Msg) { _ = m.Respond([]byte(`{"allow":true}`)) })
	require.NoError(t, err)
	require.NoError(t, service.Flush())
	var reply proto.AuthzJoinReply
	require.NoError(t, proto.Request(ctx, gateway.Conn, proto.SubjectAuthzJoin, proto.AuthzJoinRequest{UserID: "u1", RoomName: "board-b1"}, &reply))
	require.True(t, reply.Allow)

	// The gateway keeps PRESENCE, and may not touch ROOM_STATE.
	pkv, err := gateway.js.KeyValue(ctx, proto.BucketPresence)
	require.NoError(t, err)
	_, err = pkv.Put(ctx, proto.PresenceKey("u1", "gw1"), []byte(`{"active":true}`))
	require.NoError(t, err)
	e, err := pkv.Get(ctx, proto.PresenceKey("u1", "gw1"))
	require.NoError(t, err)
	require.JSONEq(t, `{"active":true}`, string(e.Value()))

	// The gateway watches REVOCATIONS and records the revokes it hears.
	rkv, err := gateway.js.KeyValue(ctx, proto.BucketRevocations)
	require.NoError(t, err)
	w, err := rkv.WatchAll(ctx)
	require.NoError(t, err)
	require.Nil(t, <-w.Updates(), "an empty bucket: the end of the initial values at once")
	require.NoError(t, proto.RecordRevocation(ctx, rkv, "u1", time.Now()))
	select {
	case e := <-w.Updates():
		require.Equal(t, "u1", e.Key())
	case <-time.After(5 * time.Second):
		t.Fatal("the gateway's watch of REVOCATIONS saw no update")
	}
	require.NoError(t, w.Stop())

	// Forbidden: gateways, roomstate and sync never publish events; domain
	// services never read live broadcasts.
	msg, _ := json.Marshal(env)
	gateway.refused(t, "rooms.board.b1.tasks", func() error { return gateway.Publish("rooms.board.b1.tasks", msg) })
	gateway.refused(t, "live.rooms.board.b1.tasks", func() error { return gateway.Publish("live.rooms.board.b1.tasks", msg) })
	rs.refused(t, "rooms.board.b1.tasks", func() error { return rs.Publish("rooms.board.b1.tasks", msg) })
	sy.refused(t, "rooms.board.b1.tasks", func() error { return sy.Publish("rooms.board.b1.tasks", msg) })
	service.refused(t, "live.>", func() error { _, err := service.SubscribeSync("live.>"); return err })
	service.refused(t, "$JS.API.STREAM.DELETE.ROOMS", func() error {
		return service.Publish("$JS.API.STREAM.DELETE.ROOMS", nil)
	})
	gateway.refused(t, "$KV.ROOM_STATE.board-b1-tasks", func() error {
		return gateway.Publish("$KV.ROOM_STATE.board-b1-tasks", []byte(`{}`))
	})
	sy.refused(t, "$KV.ROOM_STATE.board-b1-tasks", func() error {
		return sy.Publish("$KV.ROOM_STATE.board-b1-tasks", []byte(`{}`))
	})

	// Only stream ROOMS's RePublish produces the stored rooms' live subjects:
	// a forged live message with a made-up sequence is refused for every
	// role, and reaches no one. The next message the gateway receives is the
	// next one stored, with the stream's own sequence.
	chat, _ := proto.ChatRoom("u1", "u2")
	user, _ := proto.UserRoom("u1")
	org, _ := proto.OrgRoom("o1")
	for _, who := range []struct {
		name string
		c    roleConn
	}{{"admin", admin}, {"gateway", gateway}, {"roomstate", rs}, {"sync", sy}, {"service", service}} {
		for _, r := range []proto.Room{room, chat, user, org} {
			forged := nats.NewMsg(subjects.Live(r))
			forged.Header.Set(jetstream.SequenceHeader, "999")
			forged.Header.Set(jetstream.LastSequenceHeader, "998")
			forged.Data = msg
			who.c.refused(t, forged.Subject, func() error { return who.c.PublishMsg(forged) })
		}
	}
	_, err = pub.Publish(ctx, room, proto.Envelope{Event: proto.EventDeleteTask, ID: "t2", UpdatedAt: 6})
	require.NoError(t, err)
	select {
	case m := <-live:
		require.Equal(t, "2", m.Header.Get(jetstream.SequenceHeader), "no forged message was delivered before the stored one")
		require.Equal(t, "1", m.Header.Get(jetstream.LastSequenceHeader))
	case <-time.After(5 * time.Second):
		t.Fatal("gateway did not receive the second broadcast")
	}

	// Client rooms are stored nowhere: a domain service publishes them
	// straight to their live subject, and gateways receive them.
	client, _ := proto.ClientRoom("u1", "c1")
	direct := make(chan *nats.Msg, 1)
	_, err = gateway.ChanSubscribe(subjects.Live(client), direct)
	require.NoError(t, err)
	require.NoError(t, gateway.Flush())
	require.NoError(t, service.Publish(subjects.Live(client), msg))
	select {
	case m := <-direct:
		require.Equal(t, msg, m.Data)
	case <-time.After(5 * time.Second):
		t.Fatal("gateway did not receive the client room's message")
	}
	gateway.refused(t, subjects.Live(client), func() error { return gateway.Publish(subjects.Live(client), msg) })

	// The real roomstate and sync services work with nothing but their roles,
	// and are refused nothing they ask for.
	var refusedMu sync.Mutex
	var refused []string
	record := nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		refusedMu.Lock()
		defer refusedMu.Unlock()
		refused = append(refused, err.Error())
	})
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go roomstate.Run(sctx, roomstate.Config{NATSURL: s.ClientURL(), SkipEnsure: true,
		NATSOptions: []nats.Option{nats.UserInfo("roomstate", "pw-roomstate"), record}, Logger: zerolog.Nop(), Registry: prometheus.NewRegistry()})
	go backfill.Run(sctx, backfill.Config{NATSURL: s.ClientURL(),
		NATSOptions: []nats.Option{nats.UserInfo("sync", "pw-sync"), record}, Logger: zerolog.Nop(), Registry: prometheus.NewRegistry()})
	require.Eventually(t, func() bool {
		var st *proto.RoomState
		rctx, c := context.WithTimeout(ctx, time.Second)
		defer c()
		err := proto.Request(rctx, gateway.Conn, proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: room.Name()}, &st)
		return err == nil && st != nil && st.LastBroadcastTimestamp == 6 && st.Seq == 2
	}, 15*time.Second, 100*time.Millisecond, "roomstate, as role roomstate, folds the stream into ROOM_STATE for the gateway")
	var many proto.RoomStatesResult
	require.NoError(t, proto.Request(ctx, gateway.Conn, proto.SubjectRoomStateGetMany,
		proto.RoomStatesArgs{RoomNames: []string{room.Name(), "board-never"}}, &many), "getmany, read in one batched direct get")
	require.Equal(t, map[string]*proto.RoomState{room.Name(): {LastBroadcastTimestamp: 6, Seq: 2}, "board-never": nil}, many.States)
	zero := uint64(0)
	var changes proto.ChangesResult
	require.Eventually(t, func() bool {
		rctx, c := context.WithTimeout(ctx, time.Second)
		defer c()
		return proto.Request(rctx, gateway.Conn, proto.SubjectSyncChanges,
			proto.ChangesArgs{RoomName: room.Name(), Cursor: proto.Cursor{AfterSeq: &zero}}, &changes) == nil
	}, 15*time.Second, 100*time.Millisecond, "sync, as role sync, answers the gateway")
	require.Equal(t, []proto.Change{{ID: "t1", UpdatedAt: 5, Deleted: true, Seq: 1}, {ID: "t2", UpdatedAt: 6, Deleted: true, Seq: 2}}, changes.Changes)
	refusedMu.Lock()
	defer refusedMu.Unlock()
	require.Empty(t, refused, "the services' roles allow all they do")
}

// roomcast replay -rebroadcast publishes to a room's live subject, which no
// deployed role may: as admin it fails with a reason, not silently.
func TestDeployRebroadcastRefused(t *testing.T) {
	s := permServer(t, "../../deploy/nats/single.conf")
	url := strings.Replace(s.ClientURL(), "nats://", "nats://admin:pw-admin@", 1)
	c := cli{t, url}
	c.ok("streams", "ensure")
	c.ok("publish", "board-b1-tasks", "delete-task", "t1")
	code, _, errOut := c.run("replay", "-from-seq", "1", "-rebroadcast", "-quiet", "board-b1-tasks")
	require.Equal(t, exitFailure, code)
	require.Contains(t, errOut, "rebroadcast refused")
}
