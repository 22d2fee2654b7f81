//go:build unix

package gateway

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawConnOf is the descriptor of a TCP connection, for writeNonblock; nil
// for any other kind of connection.
func rawConnOf(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// maxIovecs is Linux's IOV_MAX: the most buffers one writev takes.
const maxIovecs = 1024

// writeNonblock makes one writev of bufs on raw's (non-blocking) descriptor
// and returns what the kernel did not take, without waiting for the socket
// to become writable.
func writeNonblock(raw syscall.RawConn, bufs [][]byte) ([][]byte, error) {
	var (
		n    int
		werr error
	)
	batch := bufs[:min(len(bufs), maxIovecs)]
	err := raw.Write(func(fd uintptr) bool {
		for {
			n, werr = unix.Writev(int(fd), batch)
			if !errors.Is(werr, unix.EINTR) {
				return true // done, whatever happened: never wait here
			}
		}
	})
	if err != nil {
		return bufs, err
	}
	if werr != nil && !errors.Is(werr, unix.EAGAIN) {
		return bufs, werr
	}
	n = max(n, 0)
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs, nil
}
