//go:build !linux

package bench

import (
	"errors"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
)

// readPoller needs epoll: elsewhere every socket reads from its own
// goroutine (readLoop).
type readPoller struct{}

func newReadPoller() (*readPoller, error) { return nil, errors.New("no epoll here") }

func (p *readPoller) run(*worker) {}

func (p *readPoller) wait(w *worker, s *benchSocket, c *sioclient.Conn) error {
	return w.readLoop(c, s)
}

func (p *readPoller) closedConn(*benchSocket, *sioclient.Conn) {}

func (p *readPoller) close() {}
