//go:build !linux

package gateway

import "errors"

// poller: epoll is Linux's; elsewhere every socket has a reader goroutine.
type poller struct{}

func newPoller() (*poller, error)  { return nil, errors.New("no epoll here") }
func (p *poller) add(*socket) bool { return false }
func (p *poller) forget(*socket)   {}
func (p *poller) run()             {}
func (p *poller) stop()            {}
func (p *poller) close()           {}
func (p *poller) polled() int      { return 0 }
