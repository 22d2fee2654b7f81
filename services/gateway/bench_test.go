package gateway

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/services/gateway/internal/sio"
)

var benchEnvelope = []byte(`{"event":"update-task","id":"t1","updatedAt":1700000000000,"diff":{"title":"a new title","status":"done"}}`)

// BenchmarkBroadcastFrame: encoding one broadcast (once per message,
// whatever the room's size).
func BenchmarkBroadcastFrame(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = appendBroadcastFrame("board-b1-tasks", benchEnvelope, uint64(i), uint64(i-1))
	}
}

// BenchmarkParsePacket: parsing an endpoint call frame.
func BenchmarkParsePacket(b *testing.B) {
	frame := []byte(`421["endpoint",{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}]`)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p, err := sio.ParsePacket(frame)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := sio.ParseEvent(p.Data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFanoutPerRecipient: queueing one frame to one socket and
// writing it, for a room of 1,000 sockets whose peers read everything.
// ns/op is the gateway's cost per delivery.
func BenchmarkFanoutPerRecipient(b *testing.B) {
	const members = 1000
	g := &Gateway{cfg: Config{SendQueueBytes: 1 << 20, WriteTimeout: 10 * time.Second}.withDefaults(), log: zerolog.Nop()}
	m, err := newMetrics(g.cfg.Registry)
	if err != nil {
		b.Fatal(err)
	}
	g.m = m
	sockets := make([]*socket, members)
	for i := range sockets {
		srv, cli := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, cli) }()
		sockets[i] = &socket{gw: g, conn: srv, id: fmt.Sprint(i), state: stateConnected}
		b.Cleanup(func() { srv.Close(); cli.Close() })
	}
	frame := appendBroadcastFrame("board-b1-tasks", benchEnvelope, 2, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sockets[i%members].send(frame)
	}
}
