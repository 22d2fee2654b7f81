package engineio

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// senders are the two ways a Sender writes: batched through io_uring
// (where this kernel has it) and each transport on its own. One contract
// for both.
func senders(t *testing.T) map[string]func() *Sender {
	ways := map[string]func() *Sender{"each": func() *Sender {
		s, err := NewSender(false)
		require.NoError(t, err)
		require.False(t, s.Batched())
		return s
	}}
	s, err := NewSender(true)
	s.Close()
	if err != nil {
		t.Logf("io_uring not used here: %v", err)
		return ways
	}
	ways["io_uring"] = func() *Sender {
		s, err := NewSender(true)
		require.NoError(t, err)
		require.True(t, s.Batched())
		t.Cleanup(s.Close)
		return s
	}
	return ways
}

// TestSender: broadcasts queued to 150 WebSockets (more than one
// submission) arrive whole, in order and once on every client; a socket
// whose client reads nothing fills its kernel buffer and gets the rest
// once it reads (flush), without holding up the others; a connection
// closed before the write ends its session with the write's error, and
// the others are written.
func TestSender(t *testing.T) {
	for name, newSender := range senders(t) {
		t.Run(name, func(t *testing.T) {
			const n = 150
			snd := newSender()
			ws := make([]*WebSocket, n)
			clients := make([]net.Conn, n)
			opts := testOptions
			opts.SendQueueBytes = 64 << 20 // room for more than the kernel holds
			for i := range n {
				srv, cli := tcpPair(t)
				ws[i], clients[i] = &WebSocket{}, cli
				ws[i].Init(Upgraded{Conn: srv, Opened: true}, &testHandler{w: ws[i]}, &opts)
			}
			frame := func(k int) []byte { return TextFrame(fmt.Appendf(nil, `42["broadcast",{"n":%d}]`, k)) }

			// Three broadcasts, the last two queued together (one write of
			// two frames on every socket).
			var want []byte
			var ts []Transport
			for k := range 3 {
				var started int
				for _, w := range ws {
					ok, start := w.Queue(frame(k))
					require.True(t, ok)
					if start {
						ts = append(ts, w)
						started++
					}
				}
				want = append(want, frame(k)...)
				if k == 2 {
					require.Zero(t, started, "queued behind the writer the second broadcast made")
				} else {
					require.Equal(t, n, started)
				}
				if k != 1 {
					snd.Write(ts)
					ts = ts[:0]
				}
			}
			for i, c := range clients {
				got := make([]byte, len(want))
				require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
				_, err := io.ReadFull(c, got)
				require.NoError(t, err, "client %d", i)
				require.Equal(t, want, got, "client %d", i)
			}

			// A client that reads nothing: 32 MB for it fill its buffers,
			// the rest waits in flush; the others get theirs meanwhile.
			big := TextFrame(bytes.Repeat([]byte("x"), 1<<20))
			for k := range 32 {
				ok, start := ws[0].Queue(big)
				require.True(t, ok)
				if start {
					ts = append(ts, ws[0])
				}
				if k == 0 {
					for _, w := range ws[1:] {
						_, start := w.Queue(frame(9))
						require.True(t, start)
						ts = append(ts, w)
					}
				}
			}
			snd.Write(ts)
			for i, c := range clients[1:] {
				got := make([]byte, len(frame(9)))
				_, err := io.ReadFull(c, got)
				require.NoError(t, err, "client %d", i+1)
				require.Equal(t, frame(9), got)
			}
			require.NoError(t, clients[0].SetReadDeadline(time.Now().Add(10*time.Second)))
			got, err := io.ReadAll(io.LimitReader(clients[0], int64(32*len(big))))
			require.NoError(t, err)
			require.Equal(t, bytes.Repeat(big, 32), got)

			// A closed connection among open ones.
			require.NoError(t, ws[7].conn.Close())
			ts = ts[:0]
			for _, w := range ws {
				_, start := w.Queue(frame(10))
				require.True(t, start)
				ts = append(ts, w)
			}
			snd.Write(ts)
			for i, c := range clients {
				if i == 7 {
					continue
				}
				got := make([]byte, len(frame(10)))
				_, err := io.ReadFull(c, got)
				require.NoError(t, err, "client %d", i)
			}
			ended := ws[7].h.(*testHandler).endedWith()
			require.Len(t, ended, 1)
			require.Contains(t, ended[0], "write: ")
			require.Empty(t, ws[8].h.(*testHandler).endedWith())
		})
	}
}

// TestSenderAllocs: a batched write of a broadcast to 64 sockets
// allocates nothing once the Sender has its buffers.
func TestSenderAllocs(t *testing.T) {
	snd, err := NewSender(true)
	if err != nil {
		t.Skipf("io_uring not used here: %v", err)
	}
	defer snd.Close()
	ws := make([]*WebSocket, maxSendBatch)
	for i := range ws {
		srv, cli := tcpPair(t)
		ws[i] = newTestWebSocket(srv)
		go func() { _, _ = io.Copy(io.Discard, cli) }()
	}
	frame := TextFrame([]byte(`42["broadcast",{}]`))
	ts := make([]Transport, 0, len(ws))
	allocs := testing.AllocsPerRun(100, func() {
		ts = ts[:0]
		for _, w := range ws {
			if _, start := w.Queue(frame); start {
				ts = append(ts, w)
			}
		}
		snd.Write(ts)
	})
	// The queue's slice, one per socket and write (Queue's append after
	// takeQueue let go of the last one), and nothing in the Sender.
	require.LessOrEqual(t, allocs, float64(len(ws)))
}
