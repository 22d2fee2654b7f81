package gateway

import (
	"context"
	"net"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// ownGoroutines lists the stacks of the goroutines running the gateway's
// code or nats.go's (the gateway's connection), but for the caller's own.
// The in-process nats-server's goroutines are left out: they come and go
// with its clients on their own schedule.
func ownGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var own []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // the caller
		}
		if strings.Contains(g, "roomcast/services/gateway.") || strings.Contains(g, "github.com/nats-io/nats.go") {
			own = append(own, g)
		}
	}
	return own
}

// requireGoroutinesBackTo waits (5 s at most) until no more such goroutines
// run than before, and fails with the stacks of those that stayed.
func requireGoroutinesBackTo(t *testing.T, before []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for ; ; <-tick.C {
		now := ownGoroutines()
		if len(now) <= len(before) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines before, %d still running 5 s after the gateway stopped:\n\n%s",
				len(before), len(now), strings.Join(now, "\n\n"))
		}
	}
}

// TestRunEndsItsGoroutines: after Run returns, every goroutine the gateway
// started (server, fan-out workers, presence, sweeper, poller, revocations
// watcher, deep workers, the sockets' readers and writers, its NATS
// connection) is gone.
func TestRunEndsItsGoroutines(t *testing.T) {
	for _, goroutines := range []bool{false, true} {
		t.Run(map[bool]string{false: "poller", true: "reader goroutines"}[goroutines], func(t *testing.T) {
			e := newEnv(t)
			e.answerRoomState(map[string]*proto.RoomState{})
			e.answerAuthz(func(string, string) bool { return true })
			before := ownGoroutines()

			tg := e.startGateway(func(c *Config) {
				c.ReadGoroutines = goroutines
				c.SubscriptionLinger = time.Minute // the sweeper runs
			})
			c := connectUser(t, tg, "u1")
			c.mustOK(proto.EndpointUpdateClient, map[string]any{"isActive": true}) // presence writes
			c.mustOK(proto.EndpointAddToRoom, proto.RoomArgs{RoomName: "board-b1"})
			e.publish(mustRoom(t, "board-b1"), "e1", 1)
			c.broadcast() // a fan-out worker delivered it
			require.Greater(t, len(ownGoroutines()), len(before))

			tg.cancel()
			select {
			case err := <-tg.done:
				require.NoError(t, err)
				tg.done <- err // for startGateway's cleanup
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return")
			}
			c.waitClosed()
			requireGoroutinesBackTo(t, before)
		})
	}
}

// TestNewClose: New starts no goroutine but its NATS connection's, and Close
// ends those and may be called again; a gateway that failed to start (Run
// returned an error) is closed too.
func TestNewClose(t *testing.T) {
	e := newEnv(t)
	before := ownGoroutines()
	g, err := New(Config{NATSURL: e.srv.ClientURL(), JWTSecret: testSecret, Logger: zerolog.Nop(), Registry: prometheus.NewRegistry()})
	require.NoError(t, err)
	g.Close()
	g.Close()
	require.True(t, g.nc.IsClosed())
	requireGoroutinesBackTo(t, before)

	// Run on a listener that is already closed: it fails to serve, and
	// still leaves nothing behind.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, ln.Close())
	g, err = New(Config{NATSURL: e.srv.ClientURL(), JWTSecret: testSecret, Logger: zerolog.Nop(), Registry: prometheus.NewRegistry(), Listener: ln})
	require.NoError(t, err)
	require.Error(t, g.Run(context.Background()))
	require.True(t, g.nc.IsClosed())
	g.Close()
	requireGoroutinesBackTo(t, before)
}

// TestSocketSize: an idle socket's struct (its WebSocket inside it) stays
// in the 288-byte size class; the transport's split from the session
// must not cost every idle socket a bigger one.
func TestSocketSize(t *testing.T) {
	require.LessOrEqual(t, reflect.TypeOf(socket{}).Size(), uintptr(288))
}
