package engineio

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/stretchr/testify/require"
)

// testHandler is a session that answers nothing: it records packets and
// ends, and closes the transport as a session does.
type testHandler struct {
	w *WebSocket

	mu       sync.Mutex
	packets  []string
	ended    []string
	bad      []string
	overflow int
	limited  bool // Admit's answer
}

func (h *testHandler) Admit() (limited, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.limited, true
}

func (h *testHandler) Packet(p []byte, _ bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.packets = append(h.packets, string(p))
	return true
}

func (h *testHandler) End(reason string, how CloseMode, frames ...[]byte) {
	h.mu.Lock()
	h.ended = append(h.ended, reason)
	h.mu.Unlock()
	h.w.Close(how, frames...)
}

func (h *testHandler) BadFrame(kind string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bad = append(h.bad, kind)
}

func (h *testHandler) Overflow(queued int) {
	h.mu.Lock()
	h.overflow++
	h.mu.Unlock()
	h.w.Close(CloseAbort, CloseFrame(StatusTryAgainLater, "slow consumer"))
}

func (h *testHandler) Upgraded() {}

func (h *testHandler) endedWith() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ended...)
}

var testOptions = Options{MaxPayload: 1 << 20, SendQueueBytes: 1 << 20, WriteTimeout: 5 * time.Second}

// newTestWebSocket is a WebSocket on conn with a testHandler, read by
// nobody: the test feeds it.
func newTestWebSocket(conn net.Conn) *WebSocket {
	w := &WebSocket{}
	opts := testOptions
	w.Init(Upgraded{Conn: conn, Opened: true}, &testHandler{w: w}, &opts)
	return w
}

// tcpPair is an accepted loopback TCP connection and its client end.
func tcpPair(t *testing.T) (srv, cli net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cli, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	srv, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return srv, cli
}

// TestWebSocketContract drives a WebSocket from its client end, read by a
// reader goroutine and by the poller: a text frame is a Packet; a ping
// is answered with a pong unless Admit says limited; an unmasked frame is
// counted and ends the session with a 1002 close frame; the client's
// close ends it with 1000.
func TestWebSocketContract(t *testing.T) {
	for _, poll := range []bool{false, true} {
		t.Run(map[bool]string{false: "reader goroutine", true: "poller"}[poll], func(t *testing.T) {
			opts := testOptions
			if poll {
				p, err := NewPoller()
				if err != nil {
					t.Skip("no poller here:", err)
				}
				go p.Run()
				t.Cleanup(func() { p.Stop(); p.Close() })
				opts.Poller = p
			}
			start := func() (*WebSocket, *testHandler, net.Conn) {
				srv, cli := tcpPair(t)
				w := &WebSocket{}
				h := &testHandler{w: w}
				w.Init(Upgraded{Conn: srv, Open: TextFrame([]byte(`0{"sid":"x"}`))}, h, &opts)
				w.Read()
				f, err := ws.ReadFrame(cli)
				require.NoError(t, err)
				require.Equal(t, `0{"sid":"x"}`, string(f.Payload), "the open packet, not sent with a 101")
				return w, h, cli
			}

			w, h, cli := start()
			require.NoError(t, ws.WriteFrame(cli, ws.MaskFrame(ws.NewTextFrame([]byte("2probe")))))
			require.NoError(t, ws.WriteFrame(cli, ws.MaskFrame(ws.NewPingFrame([]byte("p1")))))
			f, err := ws.ReadFrame(cli)
			require.NoError(t, err)
			require.Equal(t, ws.OpPong, f.Header.OpCode)
			require.Equal(t, "p1", string(f.Payload))
			h.mu.Lock()
			require.Equal(t, []string{"2probe"}, h.packets)
			h.limited = true
			h.mu.Unlock()
			require.NoError(t, ws.WriteFrame(cli, ws.MaskFrame(ws.NewPingFrame([]byte("p2")))))
			require.NoError(t, ws.WriteFrame(cli, ws.NewTextFrame([]byte("unmasked"))))
			f, err = ws.ReadFrame(cli)
			require.NoError(t, err)
			require.Equal(t, ws.OpClose, f.Header.OpCode, "no pong while limited; the close")
			code, reason := ws.ParseCloseFrameData(f.Payload)
			require.Equal(t, ws.StatusProtocolError, code)
			require.Equal(t, "frames must be masked", reason)
			_, err = ws.ReadFrame(cli)
			require.Error(t, err, "closed after the close frame")
			require.Equal(t, []string{"frames must be masked"}, h.endedWith())
			h.mu.Lock()
			require.Equal(t, []string{"unmasked"}, h.bad)
			h.mu.Unlock()
			ok, _ := w.Queue(TextFrame([]byte("4late")))
			require.False(t, ok, "nothing is queued once closed")
			if poll {
				require.Eventually(t, func() bool { return opts.Poller.Polled() == 0 }, 5*time.Second, time.Millisecond)
			}

			_, h, cli = start()
			require.NoError(t, ws.WriteFrame(cli, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))))
			f, err = ws.ReadFrame(cli)
			require.NoError(t, err)
			require.Equal(t, ws.OpClose, f.Header.OpCode)
			code, _ = ws.ParseCloseFrameData(f.Payload)
			require.Equal(t, ws.StatusNormalClosure, code)
			require.Equal(t, []string{"client closed the WebSocket"}, h.endedWith())

			_, h, cli = start()
			cli.Close()
			require.Eventually(t, func() bool { return len(h.endedWith()) == 1 }, 5*time.Second, time.Millisecond)
			require.Equal(t, "connection closed", h.endedWith()[0])
		})
	}
}

// TestWebSocketOverflow: a frame that would take the queue past its bound
// is refused and the Handler told (it cuts the session off); Close is
// idempotent.
func TestWebSocketOverflow(t *testing.T) {
	srv, cli := net.Pipe() // no one reads cli: every write waits
	t.Cleanup(func() { srv.Close(); cli.Close() })
	w := &WebSocket{}
	h := &testHandler{w: w}
	opts := testOptions
	opts.SendQueueBytes = 100
	w.Init(Upgraded{Conn: srv, Opened: true}, h, &opts)
	frame := TextFrame(bytes.Repeat([]byte("x"), 40))
	ok, start := w.Queue(frame)
	require.True(t, ok && start)
	w.Write() // net.Pipe has no descriptor: flush waits on a goroutine
	for i := 0; ; i++ {
		require.Less(t, i, 10, "never refused")
		if ok, _ := w.Queue(frame); !ok {
			break
		}
	}
	h.mu.Lock()
	require.Equal(t, 1, h.overflow)
	h.mu.Unlock()
	w.Close(CloseDrop)
	w.Close(CloseGraceful, NormalClose) // nothing more
	require.Eventually(t, w.Idle, AbortGrace+5*time.Second, 10*time.Millisecond, "the writer gave up")
}
