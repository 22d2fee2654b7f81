//go:build linux

package bench

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
)

// readPoller reads every socket of a worker from one goroutine, woken by
// one epoll set: a delivery costs the tool a read and a parse, not a
// goroutine woken for one message. A Go load client that reads each socket
// from its own goroutine spends ~15–20 µs per delivery, most of it in being
// woken (issue 8): at high rates the tool, not the server, ran out of CPU.
type readPoller struct {
	epfd   int
	ep     *os.File // epfd, in Go's netpoller: run waits there
	closed atomic.Bool

	mu    sync.Mutex
	socks map[int32]*polledSocket // by descriptor
	gen   uint32
}

// polledSocket is one registration: a connection of a bench socket.
type polledSocket struct {
	s    *benchSocket
	c    *sioclient.Conn
	fd   int32
	gen  uint32
	done chan error // the reason reading ended; one value
	once sync.Once
	// mu serializes reads: the poller's and the one at registration.
	mu sync.Mutex
}

// read reads what e has, handing each message to w.
func (e *polledSocket) read(w *worker, buf []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.c.ReadReady(buf, func(msg []byte) { w.onMessage(e.s, msg) })
}

func newReadPoller() (*readPoller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// Non-blocking, so that os.NewFile puts it in Go's netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	return &readPoller{epfd: epfd, ep: os.NewFile(uintptr(epfd), "epoll"), socks: map[int32]*polledSocket{}}, nil
}

// run reads the sockets that are ready until close.
//
// It never blocks in epoll_wait: the epoll descriptor is readable while a
// socket in it is, so run waits for that in Go's netpoller, then takes the
// events with a zero timeout in a raw system call. Blocked in epoll_wait, it
// held a P that the runtime's monitor took back every time, waking threads
// (a quarter of the tool's CPU went to switching between them).
func (p *readPoller) run(w *worker) {
	rc, err := p.ep.SyscallConn()
	if err != nil {
		return
	}
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for !p.closed.Load() {
		err := rc.Read(func(fd uintptr) bool {
			for {
				r, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
				if errno == syscall.EINTR {
					continue
				}
				if errno != 0 {
					return true
				}
				p.dispatch(w, events[:r], buf)
				if int(r) < len(events) {
					return false // drained: wait for the next ready socket
				}
			}
		})
		if err != nil {
			return // closed
		}
	}
}

// dispatch reads each socket of events.
func (p *readPoller) dispatch(w *worker, events []unix.EpollEvent, buf []byte) {
	for _, ev := range events {
		p.mu.Lock()
		e := p.socks[ev.Fd]
		p.mu.Unlock()
		// A closed descriptor's number is reused: the generation tells this
		// registration from an earlier one's.
		if e == nil || e.gen != uint32(ev.Pad) {
			continue
		}
		if err := e.read(w, buf); err != nil {
			p.finish(e, err)
		}
	}
}

// wait reads c (s's connection) through the poller until it fails or is
// closed, and returns why.
func (p *readPoller) wait(w *worker, s *benchSocket, c *sioclient.Conn) error {
	fd, err := c.Fd()
	if err != nil {
		return w.readLoop(c, s)
	}
	p.mu.Lock()
	p.gen++
	e := &polledSocket{s: s, c: c, fd: int32(fd), gen: p.gen, done: make(chan error, 1)}
	p.socks[e.fd] = e
	p.mu.Unlock()
	s.polled.Store(e)
	// Edge-triggered: ReadReady reads until the kernel has nothing more.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: e.fd, Pad: int32(e.gen)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.finish(e, err)
	} else if err := e.read(w, make([]byte, 4096)); err != nil {
		// What arrived before the registration (the handshake's reader
		// may hold some) is read now: no edge will announce it.
		p.finish(e, err)
	}
	err = <-e.done
	s.polled.Store(nil)
	return err
}

// finish ends e's registration with err (once).
func (p *readPoller) finish(e *polledSocket, err error) {
	e.once.Do(func() {
		p.mu.Lock()
		if p.socks[e.fd] == e {
			delete(p.socks, e.fd)
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(e.fd), nil)
		}
		p.mu.Unlock()
		e.done <- err
	})
}

// closed tells the poller that s's connection c was closed from outside (a
// drop, the end of the run): no event will say so.
func (p *readPoller) closedConn(s *benchSocket, c *sioclient.Conn) {
	if e := s.polled.Load(); e != nil && e.c == c {
		p.finish(e, sioclient.ErrClosed)
	}
}

func (p *readPoller) close() {
	p.closed.Store(true)
	_ = p.ep.Close()
}
