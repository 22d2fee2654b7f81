package engineio

import (
	"math"
	"net"
	"sync"
)

// Sender writes the queues of many transports at once, for a fan-out
// worker that has just queued a broadcast to every member of a room. On
// Linux with io_uring, the WebSockets' writes go to the kernel in
// submissions of up to maxSendBatch sends, one system call each, instead
// of one writev each: a return to user space after every send, with
// whatever the kernel does there (a reader it woke taking the CPU), was a
// third of a send's cost (docs/performance.md, "Third round: profile").
// Without io_uring (another OS, a kernel or a sandbox without it), each
// transport is written as Write does.
//
// A Sender belongs to one goroutine; Close releases it.
type Sender struct {
	ring    *sendRing // nil: Write each
	entries []sendEntry
}

// sendEntry is one WebSocket's part of a submission: the queue its writer
// took, and what became of it.
type sendEntry struct {
	w    *WebSocket
	bufs net.Buffers
	fd   int32
	// res: the bytes the kernel took, or -errno; closed: the connection
	// was closed before the submission (its descriptor could not be held).
	res    int32
	closed bool
}

// NewSender makes a Sender, batched if batch and io_uring can be used
// here; err says why it is not (io_uring missing or refused), for the log:
// the Sender works either way.
func NewSender(batch bool) (*Sender, error) {
	if !batch {
		return &Sender{}, nil
	}
	r, err := newSendRing()
	return &Sender{ring: r}, err
}

// Batched reports whether s submits its sends together (io_uring).
func (s *Sender) Batched() bool { return s.ring != nil }

// Write writes what each of ts has queued; the caller is each one's
// writer (its Queue said start), as for Transport.Write. What the kernel
// does not take at once goes on in the transport's flush, as after Write.
func (s *Sender) Write(ts []Transport) {
	if s.ring == nil {
		for _, t := range ts {
			t.Write()
		}
		return
	}
	for _, t := range ts {
		w, ok := t.(*WebSocket)
		if !ok || w.raw == nil || s.ring == nil { // s.ring: nil once broken
			t.Write()
			continue
		}
		bufs, ok := w.takeQueue(false)
		if !ok {
			continue
		}
		s.entries = append(s.entries, sendEntry{w: w, bufs: bufs, res: resPending})
		if len(s.entries) == maxSendBatch {
			s.send()
		}
	}
	s.send()
}

// send submits the entries gathered, then goes on with each writer's turn
// as Write does after a writev.
func (s *Sender) send() {
	if len(s.entries) == 0 {
		return
	}
	s.ring.submit(s.entries)
	broken := s.ring.broken
	for i := range s.entries {
		e := &s.entries[i]
		var rest net.Buffers
		var err error
		switch {
		case e.closed:
			rest, err = e.bufs, net.ErrClosed
		case e.res == resPending: // the ring broke before this one completed
			rest, err = e.bufs, broken
		case e.res < 0:
			rest, err = e.bufs, errnoErr(-e.res)
		default:
			rest = advance(e.bufs, int(e.res))
		}
		if e.w.afterWrite(rest, err) {
			e.w.Write() // what was queued meanwhile, or the end of the turn
		}
		*e = sendEntry{}
	}
	s.entries = s.entries[:0]
	if broken != nil {
		// Never seen. Its requests may still name memory the ring holds:
		// it is kept, unused, for the life of the process.
		brokenRings.Lock()
		brokenRings.rings = append(brokenRings.rings, s.ring)
		brokenRings.Unlock()
		s.ring = nil
	}
}

// resPending is an entry's res until its completion comes.
const resPending = math.MinInt32

// brokenRings keeps the rings whose io_uring_enter failed.
var brokenRings struct {
	sync.Mutex
	rings []*sendRing
}

// advance drops the first n bytes (a write's count; negative: none) of
// bufs.
func advance(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}

// Close releases the ring; s writes each transport on its own after.
func (s *Sender) Close() {
	if s.ring != nil {
		s.ring.close()
		s.ring = nil
	}
}
