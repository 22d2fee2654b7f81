//go:build unix

package engineio

import (
	"net"
	"sync"
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
	wv := writevs.Get().(*writev)
	defer writevs.Put(wv)
	batch := bufs[:min(len(bufs), maxIovecs)]
	iov := wv.small[:0]
	if len(batch) > len(wv.small) {
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
	wv.iov = iov
	err := raw.Write(wv.fn)
	n, errno := wv.n, wv.errno
	clear(wv.iov) // the pooled iovecs must not keep the frames alive
	wv.iov = nil
	if err != nil {
		return bufs, err
	}
	if errno != 0 && errno != unix.EAGAIN {
		return bufs, errno
	}
	return advance(bufs, n), nil
}

// writev is one writeNonblock's state: its iovecs and the system call's
// result, with the function the descriptor is handed to bound once, when
// the pool makes it. A function literal given to RawConn.Write escapes
// (RawConn is an interface), and everything it captures with it: that was
// four allocations per write (the iovec array, the count, the error, the
// closure), 224 bytes for every delivery.
type writev struct {
	small [8]unix.Iovec
	iov   []unix.Iovec
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

var writevs = sync.Pool{New: func() any {
	wv := &writev{}
	wv.fn = wv.call
	return wv
}}

// call makes the system call on fd, for RawConn.Write; it never waits.
func (wv *writev) call(fd uintptr) bool {
	for {
		// A raw system call: the descriptor is non-blocking, so writev
		// never sleeps, and without entersyscall/exitsyscall the Go
		// runtime's monitor does not see a P "in a system call" to
		// take back 20 µs later. At one writev per delivery, that
		// churn (a thread woken, a P handed off, many times a
		// millisecond) was ~10 % of the gateway's CPU (perf, fan-out
		// at 20,000 deliveries/s).
		r, _, errno := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&wv.iov[0])), uintptr(len(wv.iov)))
		wv.n, wv.errno = int(r), errno
		if errno != 0 {
			wv.n = -1
		}
		if errno != unix.EINTR {
			return true // done, whatever happened: never wait here
		}
	}
}
