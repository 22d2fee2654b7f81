//go:build linux

package sioclient

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"unsafe"

	"github.com/gobwas/ws"
)

// ErrNotPollable is returned by Fd for a connection that is not a TCP one.
var ErrNotPollable = errors.New("connection has no descriptor to poll")

// Fd is the socket's descriptor, for an epoll set that tells the caller
// when to call ReadReady (edge-triggered: ReadReady reads until the kernel
// has nothing more). The descriptor stays owned by c.
func (c *Conn) Fd() (int, error) {
	tc, ok := c.conn.(*net.TCPConn)
	if !ok {
		return 0, ErrNotPollable
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd := -1
	if err := raw.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return 0, err
	}
	return fd, nil
}

// ReadReady reads what the socket has, without waiting, and calls f with
// each complete Engine.IO message that is not a ping (pings are answered
// here, as Next does); a partial frame is kept for the next call. buf is
// scratch space the caller may share between sockets (not between
// goroutines). It returns nil once the kernel has nothing more, and an
// error when the socket is done (ErrClosed, io.EOF, ...).
//
// It is Next for thousands of sockets read by one goroutine: no goroutine
// per socket woken per message, and the reads are raw system calls.
func (c *Conn) ReadReady(buf []byte, f func(msg []byte)) error {
	if n := c.br.Buffered(); n > 0 {
		// What the handshake's reader already holds comes first.
		b, _ := c.br.Peek(n)
		c.pend = append(c.pend, b...)
		_, _ = c.br.Discard(n)
	}
	tc, ok := c.conn.(*net.TCPConn)
	if !ok {
		return ErrNotPollable
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var (
			n     int
			errno syscall.Errno
		)
		if err := raw.Read(func(fd uintptr) bool {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
			n, errno = int(r), e
			return true // never wait: the caller's epoll says when
		}); err != nil {
			return err
		}
		switch {
		case errno == syscall.EAGAIN:
			return nil
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return errno
		case n == 0:
			return io.EOF
		}
		data := buf[:n]
		if len(c.pend) > 0 {
			c.pend = append(c.pend, data...)
			data = c.pend
		}
		rest, err := c.frames(data, f)
		if err != nil {
			return err
		}
		c.pend = append(c.pend[:0], rest...)
	}
}

// frames handles every complete frame at the start of data and returns the
// incomplete rest.
func (c *Conn) frames(data []byte, f func(msg []byte)) ([]byte, error) {
	for {
		h, hlen, ok := parseServerHeader(data)
		if !ok {
			return data, nil
		}
		if h.Length > maxFrame || h.Length < 0 {
			return nil, fmt.Errorf("frame of %d bytes is over the %d limit", h.Length, maxFrame)
		}
		if int64(len(data)-hlen) < h.Length {
			return data, nil
		}
		p := data[hlen : hlen+int(h.Length)]
		data = data[hlen+int(h.Length):]
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch {
		case h.OpCode == ws.OpClose:
			_ = c.writeFrame(ws.OpClose, nil)
			return nil, ErrClosed
		case h.OpCode == ws.OpPing:
			if err := c.writeFrame(ws.OpPong, p); err != nil {
				return nil, err
			}
		case h.OpCode != ws.OpText:
			// pongs, binary: nothing the benchmark reads
		case !h.Fin:
			return nil, errors.New("fragmented frames are not read by ReadReady")
		case len(p) == 1 && p[0] == '2':
			if err := c.write([]byte{'3'}); err != nil {
				return nil, err
			}
		case len(p) >= 1 && p[0] == '1', len(p) >= 2 && p[0] == '4' && p[1] == '1':
			return nil, ErrClosed
		default:
			f(p)
		}
	}
}

// parseServerHeader reads a WebSocket frame header at the start of b; ok is
// false while b holds less than the whole header.
func parseServerHeader(b []byte) (h ws.Header, n int, ok bool) {
	if len(b) < 2 {
		return h, 0, false
	}
	h.Fin = b[0]&0x80 != 0
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	n = 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, false
		}
		h.Length = int64(b[2])<<8 | int64(b[3])
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, false
		}
		for i := 2; i < 10; i++ {
			h.Length = h.Length<<8 | int64(b[i])
		}
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return h, 0, false
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, true
}
