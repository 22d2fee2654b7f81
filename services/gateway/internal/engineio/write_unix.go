//go:build unix

package engineio

import (
	"errors"
	"net"
	"syscall"
	"unsafe"

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
	var small [8]unix.Iovec
	iov := small[:0]
	if len(batch) > len(small) {
		iov = make([]unix.Iovec, 0, len(batch))
	}
	for _, b := range batch {
		if len(b) > 0 {
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
	}
	if len(iov) == 0 {
		return bufs[:0], nil
	}
	err := raw.Write(func(fd uintptr) bool {
		for {
			// A raw system call: the descriptor is non-blocking, so writev
			// never sleeps, and without entersyscall/exitsyscall the Go
			// runtime's monitor does not see a P "in a system call" to
			// take back 20 µs later. At one writev per delivery, that
			// churn (a thread woken, a P handed off, many times a
			// millisecond) was ~10 % of the gateway's CPU (perf, fan-out
			// at 20,000 deliveries/s).
			r, _, errno := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			n, werr = int(r), nil
			if errno != 0 {
				n, werr = -1, errno
			}
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
