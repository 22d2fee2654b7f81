// Package panicguard stops a panic at a message handler's boundary, as
// net/http does for an HTTP handler: the panic is logged with its stack and
// counted, and the process serves the next message. Every roomcast service
// defers it where a NATS message or request enters its code (subscription
// callbacks, micro handlers, a JetStream consumer's loop, fan-out workers).
//
// Stopping the panic is half of it: the message must not stay half applied.
// What undoes or settles it differs per boundary (terminate a JetStream
// message, answer a request with an internal error, forget a cache), so the
// boundary passes that as undo; each choice is written in docs/decisions.md.
package panicguard

import (
	"fmt"
	"runtime/debug"

	"github.com/rs/zerolog"
)

// Guard logs and counts the panics it stops. The zero value is not usable:
// make one with New.
type Guard struct {
	log   zerolog.Logger
	count func(where string)
}

// New returns a guard logging to log and counting each panic with count,
// called with the boundary's name (a service passes its
// roomcast_<service>_panics_total{where} counter's Inc). count may be nil.
func New(log zerolog.Logger, count func(where string)) *Guard {
	if count == nil {
		count = func(string) {}
	}
	return &Guard{log: log, count: count}
}

// Recover stops a panic of the function that defers it, which must defer it
// directly (`defer g.Recover("feed", undo)`): recover works only there. It
// logs the panic with its stack, counts it under where, and runs undo (when
// not nil) to settle the message the panic interrupted. A panic in undo is
// stopped, logged and counted too (under where + "/undo"), so a boundary
// never takes the process down.
func (g *Guard) Recover(where string, undo func()) {
	p := recover()
	if p == nil {
		return
	}
	g.report(where, p)
	if undo != nil {
		g.Do(where+"/undo", undo)
	}
}

// Do runs fn and stops a panic in it as Recover does, without undo; it says
// whether fn panicked, for a caller that settles the message itself.
func (g *Guard) Do(where string, fn func()) (panicked bool) {
	defer g.Recover(where, func() { panicked = true })
	fn()
	return false
}

func (g *Guard) report(where string, p any) {
	g.count(where)
	g.log.Error().
		Str("where", where).
		Str("panic", fmt.Sprint(p)).
		Str("stack", string(debug.Stack())).
		Msg("recovered from a panic in a message handler; serving on")
}
