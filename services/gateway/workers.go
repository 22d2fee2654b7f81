package gateway

import "sync"

// maxIdleWorkers is how many deep workers wait for work between bursts; more
// run while a burst (a reconnect storm) needs them, then exit.
const maxIdleWorkers = 64

// deepWorkers run the deep part of reading a socket (CONNECT with its JWT and
// subscriptions, endpoint calls with their JSON and NATS requests) for the
// sockets' readers, which wait for the result. A reader then only ever runs
// shallow code and keeps the smallest stack while it waits for a frame; the
// deep stacks (8–16 KB) belong to a few long-lived workers and are not grown
// again for every call, as a fresh goroutine's would be.
type deepWorkers struct {
	mu   sync.Mutex
	idle []*deepWorker
	// stopped: the gateway has stopped; a call still runs, on a worker
	// that exits after it instead of waiting idle.
	stopped bool
}

type deepWorker struct {
	work chan func() bool
	done chan bool
}

// run runs f on an idle worker (or a new one) and returns its result.
//
// The worker goes back to the idle list here, after its result was
// received, not in its own loop: a worker that listed itself idle right
// after sending could be taken by another caller whose receive got the
// first caller's result from the channel's buffer. That caller then went
// on before its own call had run, and its reader reused the frame buffer
// the call was still reading (a CONNECT or a join read another socket's
// bytes).
func (w *deepWorkers) run(f func() bool) bool {
	w.mu.Lock()
	var dw *deepWorker
	if n := len(w.idle); n > 0 {
		dw = w.idle[n-1]
		w.idle[n-1] = nil
		w.idle = w.idle[:n-1]
	}
	w.mu.Unlock()
	if dw == nil {
		dw = &deepWorker{work: make(chan func() bool), done: make(chan bool)}
		go dw.loop()
	}
	dw.work <- f
	ok := <-dw.done
	w.mu.Lock()
	if len(w.idle) < maxIdleWorkers && !w.stopped {
		w.idle = append(w.idle, dw)
		dw = nil
	}
	w.mu.Unlock()
	if dw != nil {
		close(dw.work) // enough wait already: this one exits
	}
	return ok
}

// stop ends the idle workers, and any that finishes a call from now on.
func (w *deepWorkers) stop() {
	w.mu.Lock()
	idle := w.idle
	w.idle, w.stopped = nil, true
	w.mu.Unlock()
	for _, dw := range idle {
		close(dw.work)
	}
}

func (dw *deepWorker) loop() {
	for f := range dw.work {
		dw.done <- f()
	}
}
