//go:build linux

package gateway

import (
	"context"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestListenNoKeepAlive: sockets accepted from Listen have no TCP
// keepalive (Go turns it on by default, at several setsockopt calls each).
func TestListenNoKeepAlive(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	a, err := ln.Accept()
	require.NoError(t, err)
	defer a.Close()
	raw, err := a.(syscall.Conn).SyscallConn()
	require.NoError(t, err)
	var on int
	var gerr error
	require.NoError(t, raw.Control(func(fd uintptr) { on, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) }))
	require.NoError(t, gerr)
	require.Zero(t, on, "SO_KEEPALIVE")
}
