package main

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

// With -nats-url the demo is only the domain service: it answers
// authz.join on the given NATS (the compose stack's), and needs the
// gateways' secret.
func TestDemoServiceAlone(t *testing.T) {
	s, nc, _ := natstest.RunStack(t, proto.StoreConfig{})
	c := config{addr: "127.0.0.1:0", natsURL: s.ClientURL(), board: "demo", users: []string{"alice"}, logLevel: "error"}
	require.ErrorContains(t, runService(context.Background(), c), "ROOMCAST_JWT_SECRET")

	c.secret = "s"
	listening := make(chan net.Addr, 1)
	serviceListening = func(a net.Addr) { listening <- a }
	t.Cleanup(func() { serviceListening = func(net.Addr) {} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runService(ctx, c) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	for room, want := range map[string]bool{"board-demo": true, "board-other": false} {
		var reply proto.AuthzJoinReply
		require.Eventually(t, func() bool {
			rctx, c := context.WithTimeout(context.Background(), time.Second)
			defer c()
			return proto.Request(rctx, nc, proto.SubjectAuthzJoin, proto.AuthzJoinRequest{UserID: "alice", RoomName: room}, &reply) == nil
		}, 10*time.Second, 50*time.Millisecond)
		require.Equal(t, want, reply.Allow, room)
	}
	var addr net.Addr
	select {
	case addr = <-listening:
	case err := <-done:
		t.Fatalf("runService stopped: %v", err)
	}
	resp, err := http.Get("http://" + addr.String() + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "ready while connected")
}
