//go:build linux

package engineio

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// Poller waits for readable sockets with one epoll instance for the whole
// gateway, so that an idle socket has no goroutine at all: no stack (2 KB at
// least) and no goroutine struct. A readable socket is read by a short-lived
// goroutine, one per socket at a time, so frames are handled in order.
//
// Sockets are registered edge-triggered (EPOLLET): readiness reported while
// a socket's reader is at work only tells that reader to read once more,
// and nothing has to be re-armed after a read (a one-shot registration cost
// an epoll_ctl per read, ~7 % of the gateway's CPU in a reconnect storm).
// With EPOLLET, Linux reports every arrival of data, so a reader that
// stopped at a short read misses nothing: what comes later is a new event.
//
// The descriptor is also in Go's own netpoller (for writes that wait); the
// kernel reports readiness to both, and Go ignores read readiness nobody
// waits for.
type Poller struct {
	epfd int
	// wake is an eventfd in the epoll set: stop writes it to end run's
	// wait at once.
	wake     int
	released atomic.Bool

	mu    sync.Mutex
	socks map[int32]*polled // by descriptor
	gen   uint32
}

// polled is a registered socket and where its reading stands.
type polled struct {
	w   *WebSocket
	gen uint32 // registration generation, in the event's data
	// state is pollIdle, pollReading (a reader is at work) or pollAgain
	// (at work, and the socket was reported readable meanwhile).
	state atomic.Int32
}

const (
	pollIdle int32 = iota
	pollReading
	pollAgain
)

// NewPoller makes the epoll instance and its wake-up eventfd; it starts
// nothing (Run).
func NewPoller() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, err
	}
	return &Poller{epfd: epfd, wake: wake, socks: map[int32]*polled{}}, nil
}

// Run hands readable sockets to readers until Stop. The gateway's Run runs
// it in its group of goroutines.
func (p *Poller) Run() {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == int32(p.wake) {
				return // stop
			}
			p.mu.Lock()
			e := p.socks[ev.Fd]
			p.mu.Unlock()
			// A descriptor number is reused once closed: the generation
			// in the event's data tells this socket's registration from
			// an earlier one's.
			if e == nil || e.gen != uint32(ev.Pad) {
				continue
			}
			e.readable()
		}
	}
}

// readable starts a reader for e, or tells the one at work to read again.
func (e *polled) readable() {
	for {
		switch e.state.Load() {
		case pollIdle:
			if e.state.CompareAndSwap(pollIdle, pollReading) {
				go e.w.onReadable(e)
				return
			}
		case pollReading:
			if e.state.CompareAndSwap(pollReading, pollAgain) {
				return
			}
		default: // pollAgain: already told
			return
		}
	}
}

// done ends a reader's turn; false when the socket was reported readable
// meanwhile, and the reader must read again.
func (e *polled) done() bool {
	if e.state.CompareAndSwap(pollReading, pollIdle) {
		return true
	}
	e.state.Store(pollReading) // from pollAgain
	return false
}

// Stop makes Run return (the eventfd stays readable, so a Run started
// after Stop returns at once).
func (p *Poller) Stop() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(p.wake, one[:])
}

// Close releases the descriptors, once Run has returned or if it never
// ran; calls after the first do nothing.
func (p *Poller) Close() {
	if p.released.Swap(true) {
		return
	}
	_ = unix.Close(p.wake)
	_ = unix.Close(p.epfd)
}

// add registers w; false if it cannot be polled (then it gets a reader
// goroutine).
func (p *Poller) add(w *WebSocket) bool {
	if w.raw == nil {
		return false
	}
	var cerr error
	err := w.raw.Control(func(fd uintptr) {
		p.mu.Lock()
		p.gen++
		gen := p.gen
		w.pollFD = int32(fd)
		p.socks[int32(fd)] = &polled{w: w, gen: gen}
		p.mu.Unlock()
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd), Pad: int32(gen)}
		cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		p.forget(w)
		return false
	}
	return true
}

// forget drops w from the map (the kernel drops the registration when the
// descriptor closes).
func (p *Poller) forget(w *WebSocket) {
	p.mu.Lock()
	if e := p.socks[w.pollFD]; e != nil && e.w == w {
		delete(p.socks, w.pollFD)
	}
	p.mu.Unlock()
}

// Polled counts the sockets registered (tests, introspection).
func (p *Poller) Polled() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.socks)
}

// onReadable reads what w has, handles every complete frame and keeps a
// partial one, until nothing more was reported readable meanwhile.
func (w *WebSocket) onReadable(e *polled) {
	bp := framePool.Get().(*[]byte)
	defer framePool.Put(bp)
	buf := *bp
	for {
		var (
			n    int
			rerr error
		)
		err := w.raw.Read(func(fd uintptr) bool {
			for {
				n, rerr = unix.Read(int(fd), buf)
				if !errors.Is(rerr, unix.EINTR) {
					return true // never wait here: the poller does
				}
			}
		})
		switch {
		case err != nil:
			w.h.End(readReason(err), CloseDrop)
			return
		case errors.Is(rerr, unix.EAGAIN):
		case rerr != nil:
			w.h.End("read: "+rerr.Error(), CloseDrop)
			return
		case n == 0:
			w.h.End("connection closed", CloseDrop)
			return
		default:
			if !w.consume(buf[:n]) {
				return
			}
			if n == len(buf) {
				continue // there may be more
			}
		}
		if w.isClosing() || e.done() {
			return
		}
	}
}

// consume handles the complete frames in data (after what was kept from the
// last read) and keeps the rest. It reports whether to keep reading.
//
// When data holds more than one frame (a client that sent several calls
// back to back, as socket.io-client does with the emits of a "connect"
// handler), their answers go out together in one write: the socket's writes
// are held until the last of them is handled. A reconnecting client's three
// joins then cost one write instead of three. Meanwhile a broadcast to this
// socket waits in its queue for the calls of this read to be answered.
func (w *WebSocket) consume(data []byte) bool {
	if w.inbuf != nil {
		data = append(*w.inbuf, data...)
		w.inbuf = nil
	}
	if hasSecondFrame(data) && w.holdWrites() {
		// Whatever the frames do (close the socket included), what they
		// queued is written, or the connection closed, by the writer's
		// usual path.
		defer w.Write()
	}
	for len(data) > 0 {
		h, hdr, ok := parseHeader(data)
		if !ok {
			break
		}
		if !w.checkHeader(h) {
			return false
		}
		end := hdr + int(h.Length)
		if len(data) < end {
			break
		}
		payload := data[hdr:end]
		ws.Cipher(payload, h.Mask, 0)
		if !w.handleFrame(h, payload) {
			return false
		}
		data = data[end:]
	}
	if len(data) > 0 {
		// A partial frame (rare: clients send small frames whole). Bounded
		// by MaxPayload, checked above once its header is in.
		// Behind a pointer: the field costs idle sockets 8 bytes, not 24.
		b := append([]byte(nil), data...)
		w.inbuf = &b
	}
	return true
}

// hasSecondFrame reports whether b holds a complete frame followed by the
// header of another.
func hasSecondFrame(b []byte) bool {
	h, hdr, ok := parseHeader(b)
	if !ok || h.Length < 0 || int64(len(b)-hdr) <= h.Length {
		return false
	}
	_, _, ok = parseHeader(b[hdr+int(h.Length):])
	return ok
}

// holdWrites makes the caller the socket's writer without writing, so that
// frames queued meanwhile wait; the caller then calls Write. False when
// another writer is at work (its next writev takes the frames anyway) or
// the socket is closing.
func (w *WebSocket) holdWrites() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writing || w.closing {
		return false
	}
	w.writing = true
	return true
}
