package engineio

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// BenchmarkWriteFloor is the floor under a delivery: what writeNonblock
// costs the writing thread's CPU (user + system, so the loopback's delivery
// to the reader and its wake-up are in it), writing one frame or four
// coalesced frames per writev to 1,000 sockets in turn whose readers sleep
// between frames, as an idle client's does. Reported per writev and as
// frames per CPU-second of the writing thread: the most deliveries per
// server CPU-second that one syscall per delivery allows on this machine.
func BenchmarkWriteFloor(b *testing.B) {
	const conns = 1000
	// A broadcast's frame, as the gateway's fan-out makes one.
	frame := TextFrame([]byte(`42["broadcast",{"destination":"board-b1-tasks","data":{"event":"update-task","id":"t1","updatedAt":1733000000000,"diff":{"title":"Write the report","done":false}},"seq":1,"prevSeq":0}]`))
	raws := loopbackPairs(b, conns)
	for _, frames := range []int{1, 4} {
		b.Run(fmt.Sprintf("frames=%d", frames), func(b *testing.B) {
			bufs := make([][]byte, frames)
			for i := range bufs {
				bufs[i] = frame
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			before := threadCPU(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := writeNonblock(raws[i%conns], append([][]byte(nil), bufs...)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := threadCPU(b) - before
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/writev")
			b.ReportMetric(float64(b.N*frames)/cpu.Seconds(), "frames/cpu-s")
		})
	}
}

// loopbackPairs connects n loopback TCP pairs, drains the far ends with a
// goroutine each, and returns the near ends' descriptors.
func loopbackPairs(b *testing.B, n int) []syscall.RawConn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer ln.Close()
	raws := make([]syscall.RawConn, 0, n)
	for range n {
		far, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(b, err)
		near, err := ln.Accept()
		require.NoError(b, err)
		b.Cleanup(func() { far.Close(); near.Close() })
		go func() { _, _ = io.Copy(io.Discard, far) }()
		raws = append(raws, rawConnOf(near))
	}
	return raws
}

// threadCPU is the calling thread's CPU time (it must be locked to it).
func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	require.NoError(b, unix.Getrusage(unix.RUSAGE_THREAD, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSender is BenchmarkWriteFloor through a Sender: one frame to
// each of 1,000 WebSockets in turn, written by a Sender in groups of 100
// (a broadcast to a room of 100), with io_uring and with a writev each.
// cpu-µs/send is the writing thread's CPU per frame: the loopback's
// delivery to the reader and its wake-up included, the reader's own read
// not (a goroutine on another thread).
func BenchmarkSender(b *testing.B) {
	const conns, room = 1000, 100
	ws := make([]*WebSocket, conns)
	opts := Options{MaxPayload: 1 << 20, SendQueueBytes: 1 << 20, WriteTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	defer ln.Close()
	for i := range ws {
		far, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(b, err)
		near, err := ln.Accept()
		require.NoError(b, err)
		b.Cleanup(func() { far.Close(); near.Close() })
		go func() { _, _ = io.Copy(io.Discard, far) }()
		ws[i] = &WebSocket{}
		ws[i].Init(Upgraded{Conn: near, Opened: true}, &testHandler{w: ws[i]}, &opts)
	}
	frame := TextFrame([]byte(`42["broadcast",{"destination":"board-b1-tasks","data":{"event":"update-task","id":"t1","updatedAt":1733000000000,"diff":{"title":"Write the report","done":false}},"seq":1,"prevSeq":0}]`))
	for _, batch := range []bool{false, true} {
		b.Run(map[bool]string{false: "writev", true: "io_uring"}[batch], func(b *testing.B) {
			snd, err := NewSender(batch)
			if err != nil {
				b.Skipf("io_uring not used here: %v", err)
			}
			defer snd.Close()
			ts := make([]Transport, 0, room)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			before := threadCPU(b)
			b.ResetTimer()
			for i := 0; i < b.N; {
				ts = ts[:0]
				for ; len(ts) < room && i < b.N; i++ {
					w := ws[i%conns]
					if _, start := w.Queue(frame); start {
						ts = append(ts, w)
					}
				}
				snd.Write(ts)
			}
			b.StopTimer()
			cpu := threadCPU(b) - before
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/send")
		})
	}
}
