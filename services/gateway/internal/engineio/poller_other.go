//go:build !linux

package engineio

import "errors"

// Poller: epoll is Linux's; elsewhere every socket has a reader goroutine.
type Poller struct{}

func NewPoller() (*Poller, error)     { return nil, errors.New("no epoll here") }
func (p *Poller) add(*WebSocket) bool { return false }
func (p *Poller) forget(*WebSocket)   {}
func (p *Poller) Run()                {}
func (p *Poller) Stop()               {}
func (p *Poller) Close()              {}
func (p *Poller) Polled() int         { return 0 }
