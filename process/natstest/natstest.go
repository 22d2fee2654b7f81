// Package natstest starts real, in-process nats-servers with JetStream for
// tests: one server, or a cluster, on random ports with temporary stores.
package natstest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// RunServer starts a nats-server with JetStream on a random port and a
// temporary store, shut down when the test ends. Options may adjust the
// server's options before it starts.
func RunServer(t testing.TB, opts ...func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}
	for _, opt := range opts {
		opt(o)
	}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatalf("natstest: server not ready within 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect connects to s, closing the connection when the test ends.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// RunStack starts a server, connects to it and ensures stream ROOMS and the
// buckets with c. It returns the server and a JetStream context on the
// connection.
func RunStack(t testing.TB, c proto.StoreConfig) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := RunServer(t)
	nc := Connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := proto.Ensure(ctx, js, c); err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return s, nc, js
}

// RunCluster starts n clustered servers with JetStream (distinct names and
// stores, routes between all) and waits until JetStream has a meta leader.
// Each is shut down when the test ends.
func RunCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freeClusterPort(t)
	}
	var routes string
	for i, p := range ports {
		if i > 0 {
			routes += ","
		}
		routes += fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	servers := make([]*server.Server, n)
	for i := range servers {
		servers[i] = RunServer(t, func(o *server.Options) {
			o.ServerName = fmt.Sprintf("n%d", i+1)
			o.Cluster = server.ClusterOpts{Name: "roomcast-test", Host: "127.0.0.1", Port: ports[i]}
			o.Routes = server.RoutesFromStr(routes)
		})
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				return servers
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("natstest: no JetStream meta leader among %d servers within 20s", n)
	return nil
}

// freeClusterPort finds a free port for a cluster listener (route URLs must
// be known before the servers start, so Port: -1 does not do here).
func freeClusterPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
