//go:build !unix

package engineio

import (
	"net"
	"syscall"
)

// rawConnOf: no non-blocking writes here; every write goes through flush.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func writeNonblock(_ syscall.RawConn, bufs [][]byte) ([][]byte, error) { return bufs, nil }
