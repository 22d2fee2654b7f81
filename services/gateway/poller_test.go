package gateway

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// TestReadersBothWays: a socket read by the poller (Linux) and one with a
// reader goroutine (ReadGoroutines) both connect, call, get broadcasts and
// are cleaned up when their client goes.
func TestReadersBothWays(t *testing.T) {
	for _, goroutines := range []bool{false, true} {
		t.Run(map[bool]string{false: "poller", true: "goroutines"}[goroutines], func(t *testing.T) {
			e := newEnv(t)
			e.answerRoomState(nil)
			e.answerAuthz(func(string, string) bool { return true })
			tg := e.startGateway(func(c *Config) { c.ReadGoroutines = goroutines })
			if runtime.GOOS == "linux" {
				require.Equal(t, !goroutines, tg.poller != nil)
			}
			c := connectUser(t, tg, "u1")
			c.mustOK("addToRoom", proto.RoomArgs{RoomName: "board-b1"})
			if tg.poller != nil {
				require.Equal(t, 1, tg.poller.Polled())
			}
			tasks := mustRoom(t, "board-b1-tasks")
			env1, seq1 := e.publish(tasks, "t1", 1)
			b := c.broadcast()
			require.Equal(t, string(env1), string(b.Data))
			require.Equal(t, seq1, b.Seq)
			c.mustOK("addToRoom", proto.RoomArgs{RoomName: "org-o1"})

			// A frame in two writes: the poller keeps the first part
			// between reads (when the reads do split it).
			var frame bytes.Buffer
			require.NoError(t, ws.WriteFrame(&frame, ws.MaskFrame(ws.NewTextFrame(
				[]byte(`4299["endpoint",{"endpointName":"updateClient","endpointArgs":{"isActive":true}}]`)))))
			b1 := frame.Bytes()
			_, err := c.conn.Write(b1[:5])
			require.NoError(t, err)
			_, err = c.conn.Write(b1[5:])
			require.NoError(t, err)
			select {
			case a := <-c.acks:
				require.True(t, strings.HasPrefix(a, `4399[{"ok":true`), a)
			case <-time.After(5 * time.Second):
				t.Fatal("no ack for the split frame")
			}

			c.conn.Close()
			require.Eventually(t, func() bool { return tg.roomMembers(tasks) == 0 }, 5e9, 1e6)
			if tg.poller != nil {
				require.Eventually(t, func() bool { return tg.poller.Polled() == 0 }, 5e9, 1e6)
			}
		})
	}
}
