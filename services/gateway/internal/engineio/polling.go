package engineio

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Polling is one session's Engine.IO long-polling transport: frames queue
// here until a GET takes them (their packets, \x1e-separated), and POSTs
// carry the client's packets. It holds encoded frames, the same bytes a
// WebSocket writes, so a broadcast stays encoded once. On the upgrade the
// session's WebSocket (ws, inside the session) probes, and on "5" what is
// queued here moves to it, in order; frames queued here after that go on
// to it.
//
// Lock order: Polling.mu comes before WebSocket.mu (the upgrade moves the
// queue under it); the Handler is called with neither held.
type Polling struct {
	srv  *Server
	sid  string
	h    Handler
	ws   *WebSocket // the session's, used once the client upgrades
	opts *Options

	post sync.Mutex // one POST at a time: an overlapping one is refused
	wake chan struct{}

	mu        sync.Mutex
	closing   bool
	waiting   bool        // a GET waits
	claimed   bool        // a WebSocket upgrade was asked for (one only)
	upgrading bool        // the WebSocket probed: a GET carries a noop at once
	probe     *WebSocket  // the probing WebSocket, until it upgrades or fails
	upgraded  *WebSocket  // after "5": frames go on to it
	frames    [][]byte    // waiting for a GET
	queued    int         // bytes in frames
	closeAt   *time.Timer // forgets the sid if no GET takes the last packets
}

var _ Transport = (*Polling)(nil)

// Frames a polling session may be sent.
var (
	noopFrame  = TextFrame([]byte("6"))
	closeFrame = TextFrame([]byte("1"))
	probeFrame = TextFrame([]byte("3probe"))
)

// Queue: see Transport. A polling Queue never makes the caller a writer: it
// wakes the waiting GET itself.
func (p *Polling) Queue(frame []byte) (ok, start bool) { return p.queue1(frame, nil, nil) }

// QueueOrdered is Transport's: polling sends plain frames (its WebSocket,
// once upgraded, compressed ones where it negotiated so).
func (p *Polling) QueueOrdered(m *Message, o Orderer) (ok, start bool) {
	return p.queue1(m.Frame, m, o)
}

// queue1 queues frame, telling o of m first (when o is not nil). After
// the upgrade the WebSocket queues it, and tells o under its own lock:
// the upgrade moved the queue under both locks, so o hears of every
// message in the order the client gets it.
func (p *Polling) queue1(frame []byte, m *Message, o Orderer) (ok, start bool) {
	p.mu.Lock()
	if u := p.upgraded; u != nil {
		p.mu.Unlock()
		if m != nil {
			return u.QueueOrdered(m, o)
		}
		return u.Queue(frame)
	}
	if o != nil {
		o.Queued(m)
	}
	if p.closing {
		p.mu.Unlock()
		return false, false
	}
	if p.queued+len(frame) > p.opts.SendQueueBytes {
		queued := p.queued
		p.mu.Unlock()
		p.h.Overflow(queued)
		return false, false
	}
	p.frames = append(p.frames, frame)
	p.queued += len(frame)
	p.mu.Unlock()
	p.signal()
	return true, false
}

// Write writes for a caller Queue made the writer: only after the upgrade,
// on the WebSocket.
func (p *Polling) Write() {
	p.mu.Lock()
	u := p.upgraded
	p.mu.Unlock()
	if u != nil {
		u.Write()
	}
}

func (p *Polling) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Close: see Transport. The client hears a close packet on its next GET
// (after what is queued, for CloseGraceful); a WebSocket close frame among
// frames becomes that close packet.
func (p *Polling) Close(how CloseMode, frames ...[]byte) {
	p.mu.Lock()
	if u := p.upgraded; u != nil {
		p.mu.Unlock()
		u.Close(how, frames...)
		return
	}
	if p.closing {
		p.mu.Unlock()
		return
	}
	p.closing = true
	if how != CloseGraceful {
		p.frames, p.queued = nil, 0
	}
	if how != CloseDrop {
		for _, f := range frames {
			if !IsClose(f) {
				p.frames = append(p.frames, f)
			}
		}
	}
	p.frames = append(p.frames, closeFrame)
	probe := p.probe
	if how != CloseDrop && p.upgrading {
		// The client had "3probe" and pauses its polling: once its last
		// GET is back it sends none, only "5", and the upgrade carries
		// the last frames. Dropping the probe here left such a client
		// waiting for a GET it would never send.
		probe = nil
	} else {
		p.probe = nil
	}
	// A client that does not come back for its close packet: the sid is
	// forgotten after a ping's worth of time, and a probe still open with it.
	p.closeAt = time.AfterFunc(p.srv.PingInterval+p.srv.PingTimeout, func() {
		p.srv.forget(p)
		p.mu.Lock()
		probe := p.probe
		p.probe = nil
		p.mu.Unlock()
		if probe != nil {
			probe.Close(CloseDrop)
		}
	})
	p.mu.Unlock()
	p.signal()
	if probe != nil {
		probe.Close(CloseDrop)
	}
}

// serveGet answers a long-poll: what is queued, as soon as there is any.
func (p *Polling) serveGet(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.upgraded != nil {
		p.mu.Unlock()
		pollError(w, http.StatusBadRequest, "the session upgraded to a WebSocket")
		return
	}
	if p.waiting {
		p.mu.Unlock()
		// The reference server closes a session whose client polls twice
		// at once.
		pollError(w, http.StatusBadRequest, "overlapping GET")
		p.h.End("polling: overlapping GET", CloseDrop)
		return
	}
	p.waiting = true
	for len(p.frames) == 0 && !p.upgrading && p.upgraded == nil && !p.srv.letGo.Load() {
		p.mu.Unlock()
		select {
		case <-p.wake:
		case <-r.Context().Done():
			p.mu.Lock()
			p.waiting = false
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
	}
	frames := p.frames
	p.frames, p.queued, p.waiting = nil, 0, false
	closed := p.closing
	p.mu.Unlock()
	if len(frames) == 0 {
		frames = [][]byte{noopFrame} // the upgrade or a shutdown lets the poll go
	}
	n := len(frames) - 1
	for _, f := range frames {
		n += len(Payload(f))
	}
	body := make([]byte, 0, n)
	for i, f := range frames {
		if i > 0 {
			body = append(body, 0x1e)
		}
		body = append(body, Payload(f)...)
	}
	pollHeaders(w)
	_, _ = w.Write(body)
	if closed {
		p.srv.forget(p)
	}
}

// servePost hands the packets of a POST to the session, in order.
func (p *Polling) servePost(w http.ResponseWriter, r *http.Request) {
	if !p.post.TryLock() {
		pollError(w, http.StatusBadRequest, "overlapping POST")
		p.h.End("polling: overlapping POST", CloseDrop)
		return
	}
	defer p.post.Unlock()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(p.opts.MaxPayload)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			pollError(w, http.StatusRequestEntityTooLarge, "payload too large: at most maxPayload bytes per POST")
			p.h.BadFrame("too_large")
			p.h.End("polling: payload too large", CloseDrop)
			return
		}
		pollError(w, http.StatusBadRequest, "could not read the body")
		return
	}
	p.mu.Lock()
	gone := p.upgraded != nil || p.closing
	p.mu.Unlock()
	if gone {
		pollError(w, http.StatusBadRequest, "session closed or upgraded")
		return
	}
	// Answered once its packets are handled: a client that upgrades
	// waits for its POSTs first, so the WebSocket's packets come after.
	p.handle(body)
	pollHeaders(w)
	_, _ = w.Write([]byte("ok"))
}

// handle hands a POST's packets to the session until one ends it.
func (p *Polling) handle(body []byte) {
	for pkt := range bytes.SplitSeq(body, []byte{0x1e}) {
		limited, ok := p.h.Admit()
		if !ok {
			return
		}
		if !utf8.Valid(pkt) {
			p.h.BadFrame("utf8")
			p.h.End("packet is not valid UTF-8", CloseAbort)
			return
		}
		if !p.h.Packet(pkt, limited) {
			return
		}
	}
}

func pollHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
}

// pollError answers a polling request as the reference server does.
func pollError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"code":3,"message":"` + message + `"}`))
}

// claim reserves the session's WebSocket for one upgrade.
func (p *Polling) claim() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.claimed || p.closing {
		return false
	}
	p.claimed = true
	return true
}

// startProbe starts the upgrade's WebSocket, read through a probeHandler
// until the client says "5".
func (p *Polling) startProbe(u Upgraded) {
	u.Open, u.Opened = nil, true // an upgrade has no open packet
	ph := &probeHandler{p: p}
	p.ws.Init(u, ph, p.opts)
	p.mu.Lock()
	closing := p.closing
	if !closing {
		p.probe = p.ws
	}
	p.mu.Unlock()
	if closing {
		p.ws.Close(CloseDrop)
		return
	}
	p.ws.Read()
}

// probeHandler is the upgrading WebSocket's Handler: "2probe" is answered
// "3probe" and lets the waiting GET go (noop), "5" moves the session to
// the WebSocket; until then a failure ends the WebSocket alone (the
// session goes on polling). After "5" it is the session's Handler.
type probeHandler struct {
	p    *Polling
	done atomic.Bool
}

func (ph *probeHandler) Admit() (limited, ok bool) {
	if ph.done.Load() {
		return ph.p.h.Admit()
	}
	return false, true
}

func (ph *probeHandler) Packet(pkt []byte, limited bool) bool {
	if ph.done.Load() {
		return ph.p.h.Packet(pkt, limited)
	}
	p := ph.p
	switch string(pkt) {
	case "2probe":
		p.mu.Lock()
		p.upgrading = true
		p.mu.Unlock()
		p.signal()
		if ok, start := p.ws.Queue(probeFrame); ok && start {
			p.ws.Write()
		}
		return true
	case "5":
		// A POST still being handled finishes first: the session's
		// packets come in order, one reader at a time.
		p.post.Lock()
		defer p.post.Unlock()
		p.mu.Lock()
		if !p.upgrading || p.probe != p.ws {
			p.mu.Unlock()
			p.ws.Close(CloseAbort, CloseFrame(StatusProtocolError, "upgrade without a probe"))
			return false
		}
		closing := p.closing
		start := p.ws.moveIn(p.frames)
		p.frames, p.queued = nil, 0
		p.upgraded, p.probe = p.ws, nil
		if closing {
			p.closeAt.Stop()
		} else {
			ph.done.Store(true)
		}
		p.mu.Unlock()
		p.signal() // a GET still waiting gets a noop
		// The sid is the WebSocket's now: later polls are refused as
		// unknown, and the registry keeps nothing of the session.
		p.srv.forget(p)
		if closing {
			// The session ended while its client upgraded: its last
			// frames, the close packet last, go over the WebSocket, which
			// closes after them.
			if start {
				p.ws.Write()
			}
			p.ws.Close(CloseGraceful)
			return false
		}
		p.h.Upgraded()
		if start {
			p.ws.Write()
		}
		return true
	}
	p.ws.Close(CloseAbort, CloseFrame(StatusProtocolError, "expected 2probe or 5 while upgrading"))
	return false
}

func (ph *probeHandler) End(reason string, how CloseMode, frames ...[]byte) {
	if ph.done.Load() {
		ph.p.h.End(reason, how, frames...)
		return
	}
	p := ph.p
	p.mu.Lock()
	p.probe, p.upgrading = nil, false
	p.mu.Unlock()
	p.ws.Close(how, frames...)
}

func (ph *probeHandler) BadFrame(kind string) { ph.p.h.BadFrame(kind) }

func (ph *probeHandler) Overflow(queued int) {
	if ph.done.Load() {
		ph.p.h.Overflow(queued)
		return
	}
	ph.End("slow consumer while upgrading", CloseDrop)
}

func (ph *probeHandler) Upgraded() {}
