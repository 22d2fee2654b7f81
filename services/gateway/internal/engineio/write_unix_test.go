//go:build unix

package engineio

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWriteNonblock: the buffers arrive whole and in order, with fewer and
// with more of them than the pooled iovecs hold; a socket whose buffer is
// full gives back what the kernel did not take, without an error and
// without waiting; a write allocates nothing (the delivery path makes one
// per member of every broadcast).
func TestWriteNonblock(t *testing.T) {
	near, far := tcpPair(t)
	raw := rawConnOf(near)
	require.NotNil(t, raw)

	for _, n := range []int{1, 3, 8, 9, 40} {
		var bufs [][]byte
		var want []byte
		for i := range n {
			b := bytes.Repeat([]byte{byte('a' + i%26)}, 10+i)
			bufs = append(bufs, b)
			want = append(want, b...)
		}
		rest, err := writeNonblock(raw, bufs)
		require.NoError(t, err)
		require.Empty(t, rest, "%d buffers", n)
		got := make([]byte, len(want))
		_, err = io.ReadFull(far, got)
		require.NoError(t, err)
		require.Equal(t, want, got, "%d buffers", n)
	}

	frame := TextFrame([]byte(`42["broadcast",{"destination":"board-b1-tasks","data":{},"seq":2,"prevSeq":1}]`))
	bufs := [][]byte{frame, frame}
	go func() { _, _ = io.Copy(io.Discard, far) }()
	allocs := testing.AllocsPerRun(200, func() {
		if rest, err := writeNonblock(raw, bufs); err != nil || len(rest) != 0 {
			t.Errorf("writeNonblock: rest %d, %v", len(rest), err)
		}
	})
	require.Zero(t, allocs, "allocations per writeNonblock")
}

// TestWriteNonblockFull: with nobody reading, the writes stop at what the
// kernel holds; the rest comes back (the part of a frame not taken first),
// and is written whole once the reader reads.
func TestWriteNonblockFull(t *testing.T) {
	near, far := tcpPair(t)
	raw := rawConnOf(near)
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	var written int
	var rest [][]byte
	for range 10_000 {
		var err error
		rest, err = writeNonblock(raw, [][]byte{chunk})
		require.NoError(t, err)
		written += len(chunk)
		if len(rest) > 0 {
			written -= len(rest[0])
			break
		}
	}
	require.NotEmpty(t, rest, "the kernel took 640 MB without a reader")

	done := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, far)
		done <- n
	}()
	left := len(rest[0])
	require.NoError(t, writeAll(near, rest))
	near.Close()
	require.Equal(t, int64(written+left), <-done)
}

// writeAll writes bufs with the blocking path (as flush does).
func writeAll(c net.Conn, bufs [][]byte) error {
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(c)
	return err
}
