//go:build !linux

package wsclient

import "net"

// stamped has no kernel receive stamps outside Linux: Conn.Arrival stays 0.
type stamped struct{ net.Conn }

func stampArrivals(net.Conn) (*stamped, error) { return nil, nil }

func (c *stamped) arrival() int64 { return 0 }
