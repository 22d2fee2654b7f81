package gateway

import (
	"container/heap"
	"sync"
	"time"
)

// heartbeats is every socket's timer in one: a heap of sockets by the time
// their next heartbeat step is due (the CONNECT deadline, the next ping, the
// pong deadline, the token's expiry), and one time.Timer for the soonest.
// A time.Timer per socket cost about 130 bytes of heap each (the runtime's
// timer behind it); here a socket pays a slot in the heap (8 bytes) and two
// fields.
//
// Lock order: see locksordering.txt (socket.mu → heartbeats.mu). fire
// calls the sockets' steps after letting go of mu.
type heartbeats struct {
	mu      sync.Mutex
	heap    hbHeap // by hbAt, soonest first; a socket's place is hbIdx
	timer   *time.Timer
	armedAt int64 // when timer fires (mono); 0: not armed
}

// monoEpoch anchors mono: time.Since reads the monotonic clock, so heartbeat
// times do not jump with the wall clock.
var monoEpoch = time.Now()

// mono is nanoseconds on the monotonic clock.
func mono() int64 { return int64(time.Since(monoEpoch)) }

func (h *heartbeats) init() {
	h.timer = time.AfterFunc(time.Hour, h.fire)
	h.timer.Stop()
}

// schedule makes s's next step due at at (mono), in place of any other.
func (h *heartbeats) schedule(s *socket, at int64) {
	h.mu.Lock()
	s.hbAt = at
	if s.hbIdx < 0 {
		heap.Push(&h.heap, s)
	} else {
		h.fix(int(s.hbIdx))
	}
	h.armLocked()
	h.mu.Unlock()
}

// cancel takes s out; its step will not run.
func (h *heartbeats) cancel(s *socket) {
	h.mu.Lock()
	if i := int(s.hbIdx); i >= 0 {
		h.removeAt(i)
	}
	h.mu.Unlock()
}

// stop ends every heartbeat (the gateway is stopping).
func (h *heartbeats) stop() {
	h.mu.Lock()
	for _, s := range h.heap {
		s.hbIdx = -1
	}
	h.heap = nil
	h.timer.Stop()
	h.armedAt = 0
	h.mu.Unlock()
}

// armLocked sets the timer for the soonest step, unless it already fires
// by then.
func (h *heartbeats) armLocked() {
	if len(h.heap) == 0 {
		return // an armed timer finds nothing to do
	}
	first := h.heap[0].hbAt
	if h.armedAt != 0 && h.armedAt <= first {
		return
	}
	h.armedAt = first
	h.timer.Reset(time.Duration(first - mono()))
}

// fire runs the steps that are due, then sets the timer for the next.
func (h *heartbeats) fire() {
	now := mono()
	var due []*socket
	h.mu.Lock()
	h.armedAt = 0
	for len(h.heap) > 0 && h.heap[0].hbAt <= now {
		s := h.heap[0]
		h.removeAt(0)
		due = append(due, s)
	}
	h.armLocked()
	h.mu.Unlock()
	for _, s := range due {
		s.onHeartbeat()
	}
}

// len counts the sockets with a step scheduled (tests).
func (h *heartbeats) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.heap)
}

func (h *heartbeats) removeAt(i int) { heap.Remove(&h.heap, i) }

// fix restores the heap order around i after its time changed.
func (h *heartbeats) fix(i int) { heap.Fix(&h.heap, i) }

// hbHeap orders sockets by hbAt for container/heap, keeping each socket's
// hbIdx current.
type hbHeap []*socket

func (q hbHeap) Len() int           { return len(q) }
func (q hbHeap) Less(i, j int) bool { return q[i].hbAt < q[j].hbAt }
func (q hbHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].hbIdx, q[j].hbIdx = int32(i), int32(j)
}

func (q *hbHeap) Push(x any) {
	s := x.(*socket)
	s.hbIdx = int32(len(*q))
	*q = append(*q, s)
}

func (q *hbHeap) Pop() any {
	old := *q
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	s.hbIdx = -1
	return s
}
