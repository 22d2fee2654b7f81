//go:build linux

package wsclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// stamped is a TCP connection read with recvmsg and SO_TIMESTAMPNS: the
// kernel stamps each segment when it reaches the socket (for loopback,
// while the sender's send is still in the kernel), and a read returns the
// stamp of the latest segment it took. It counts what it reads in
// BytesRead, as counted does.
type stamped struct {
	net.Conn
	rc   syscall.RawConn
	oob  [64]byte
	last int64 // Unix ns: the stamp of the latest read that had one
}

func stampArrivals(conn net.Conn) (*stamped, error) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("arrival stamps need a TCP connection, not a %T", conn)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("SO_TIMESTAMPNS: %w", serr)
	}
	return &stamped{Conn: conn, rc: rc}, nil
}

func (c *stamped) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n, oobn int
	var rerr error
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, _, _, rerr = syscall.Recvmsg(int(fd), p, c.oob[:], 0)
			if !errors.Is(rerr, syscall.EINTR) {
				return !errors.Is(rerr, syscall.EAGAIN)
			}
		}
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	if ns := stampOf(c.oob[:oobn]); ns > 0 {
		c.last = ns
	}
	bytesRead.Add(uint64(n))
	return n, nil
}

func (c *stamped) arrival() int64 { return c.last }

// stampOf finds the SCM_TIMESTAMPNS message among a recvmsg's control
// messages: its time in Unix ns, or 0 without one.
func stampOf(oob []byte) int64 {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET || m.Header.Type != syscall.SCM_TIMESTAMPNS {
			continue
		}
		switch len(m.Data) { // a struct timespec: two longs
		case 16:
			return int64(binary.NativeEndian.Uint64(m.Data))*1e9 + int64(binary.NativeEndian.Uint64(m.Data[8:]))
		case 8:
			return int64(int32(binary.NativeEndian.Uint32(m.Data)))*1e9 + int64(int32(binary.NativeEndian.Uint32(m.Data[4:])))
		}
	}
	return 0
}
