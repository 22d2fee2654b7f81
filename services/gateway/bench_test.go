package gateway

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
	"github.com/roomcast/roomcast/services/gateway/internal/sio"
)

var benchEnvelope = []byte(`{"event":"update-task","id":"t1","updatedAt":1700000000000,"diff":{"title":"a new title","status":"done"}}`)

// BenchmarkBroadcastFrame: encoding one broadcast (once per message,
// whatever the room's size).
func BenchmarkBroadcastFrame(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_ = appendBroadcastFrame("board-b1-tasks", benchEnvelope, uint64(i), uint64(i-1), false)
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

// BenchmarkFanoutPerRecipient: a room of 1,000 sockets on loopback TCP
// whose peers read everything; each message is queued to every member, then
// written, as the fan-out workers do. ns/op is the cost of one delivery,
// the peers' reads included (they run in this process): one write per
// delivery, as at modest rates, where nothing can be coalesced. With
// recovery on, each delivery also takes its place in the socket's order
// (recovery_order.go).
func BenchmarkFanoutPerRecipient(b *testing.B) {
	for _, recovery := range []bool{false, true} {
		b.Run(fmt.Sprintf("recovery=%v", recovery), func(b *testing.B) { benchFanout(b, recovery) })
	}
}

func benchFanout(b *testing.B, recovery bool) {
	const members = 1000
	g := &Gateway{cfg: Config{SendQueueBytes: 1 << 20, WriteTimeout: 10 * time.Second}.withDefaults(), log: zerolog.Nop()}
	if recovery {
		g.sessions = &sessions{} // sockets keep their order; nothing is written
	}
	m, err := newMetrics(g.cfg.Registry)
	if err != nil {
		b.Fatal(err)
	}
	g.m = m
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	sockets := make([]*socket, members)
	for i := range sockets {
		cli, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		srv, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		go func() { _, _ = io.Copy(io.Discard, cli) }()
		sockets[i] = socketOn(g, srv)
		sockets[i].id, sockets[i].state = fmt.Sprint(i), stateConnected
		if recovery {
			// A socket's usual rooms: its user room and a board's three.
			sockets[i].sess.order.joined(0, "user-u"+fmt.Sprint(i), "board-b1", "board-b1-tasks", "board-b1-sprints")
		}
		b.Cleanup(func() { srv.Close(); cli.Close() })
	}
	msg := engineio.Message{Threshold: -1, Room: "board-b1-tasks"}
	var writers []*socket
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%members == 0 {
			seq := uint64(i/members + 2)
			msg.Frame, msg.Seq = appendBroadcastFrame("board-b1-tasks", benchEnvelope, seq, seq-1, recovery), seq
		}
		if _, start := sockets[i%members].enqueueMessage(&msg); start {
			writers = append(writers, sockets[i%members])
		}
		if i%members == members-1 || i == b.N-1 {
			for _, s := range writers {
				s.writeNow()
			}
			writers = writers[:0]
		}
	}
}

// BenchmarkConnectAuth is what a CONNECT spends on its token: a fresh token
// (parsed and checked: signature, times, number types), one seen before
// (the verified cache), and the revocation check every CONNECT makes (a
// map read under a read lock, with 10,000 revokes on record: no round
// trip).
func BenchmarkConnectAuth(b *testing.B) {
	v, err := newTokenVerifier(Config{JWTSecret: testSecret, Store: proto.StoreConfig{MaxTokenLifetime: 24 * time.Hour}})
	require.NoError(b, err)
	now := time.Now()
	mint := func(i int) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": "u" + strconv.Itoa(i), "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		}).SignedString([]byte(testSecret))
		require.NoError(b, err)
		return tok
	}
	b.Run("fresh", func(b *testing.B) {
		// A verifier per run: its cache must not fill up across runs.
		v, err := newTokenVerifier(Config{JWTSecret: testSecret, Store: proto.StoreConfig{MaxTokenLifetime: 24 * time.Hour}})
		require.NoError(b, err)
		toks := make([]string, b.N)
		for i := range toks {
			toks[i] = mint(i)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := v.verify(toks[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		tok := mint(1_000_000)
		_, _ = v.verify(tok)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := v.verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("revoked-check", func(b *testing.B) {
		var r revocations
		r.init(24 * time.Hour)
		for i := range 10_000 {
			r.note("r"+strconv.Itoa(i), now)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if r.refuses("u1", now) {
				b.Fatal("u1 was never revoked")
			}
		}
	})
}

// BenchmarkOrderQueued is what recovery adds to one delivery: the socket's
// order takes the broadcast's place (its lock, the highest sequence, the
// room's last), for a socket in its user room and a board's three rooms,
// the broadcasts in order (an inversion costs an append more).
func BenchmarkOrderQueued(b *testing.B) {
	var o order
	o.joined(0, "user-u1", "board-b1", "board-b1-tasks", "board-b1-sprints")
	m := engineio.Message{Room: "board-b1-sprints"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m.Seq = uint64(i + 1)
		o.Queued(&m)
	}
}
