package backfill

import (
	"sync"
	"time"
)

// admission decides when a request is read, so that one user's flood of
// reads cannot make another user's wait or fail (issue 13.4):
//
//   - at most slots requests are read at once (Concurrency), and at most
//     perUser of them for one user (UserConcurrency): a flood holds a few
//     slots, the others stay free for everyone else;
//   - a request that cannot start waits in its user's line, at most queue
//     of them per user (UserQueue) and maxQueued in all; the lines are
//     served in turn, one request per user per turn, whatever their
//     lengths;
//   - a request beyond its user's line, or that waited longer than maxWait,
//     is refused at once (rate_limited, with a retry hint) instead of being
//     left to time out in the gateway two seconds later.
//
// The user is the one the gateway names in the request (proto.
// HistoryRequest); requests without one (the operator's CLI) share a line.
type admission struct {
	slots, perUser, queue, maxQueued int
	maxWait                          time.Duration

	mu      sync.Mutex
	running int
	queued  int
	users   map[string]*userLine // users with a request running or waiting
	turns   []*userLine          // users with a request waiting, in turn order
	// mean is a moving average of how long a read takes, for retry hints.
	mean time.Duration
}

// userLine is one user's requests: how many run, and those that wait.
type userLine struct {
	user    string
	running int
	waiting []*waiter
	inTurns bool
}

// waiter is a request waiting for a slot: run reads and answers it (then
// calls done), refuse answers it rate_limited with a retry hint.
type waiter struct {
	run    func()
	refuse func(retryAfter time.Duration)
	since  time.Time
}

func newAdmission(slots, perUser, queue, maxQueued int, maxWait time.Duration) *admission {
	return &admission{slots: slots, perUser: perUser, queue: queue, maxQueued: maxQueued, maxWait: maxWait,
		users: map[string]*userLine{}, mean: 2 * time.Millisecond}
}

// admit runs w now (on a goroutine of its own), queues it, or refuses it.
// It never blocks: it is called from the subscription's one goroutine.
func (a *admission) admit(user string, w *waiter) {
	if refused, hint := a.enter(user, w); refused {
		w.refuse(hint)
	}
}

// enter starts or queues w, or says it is refused and the retry hint.
// (A function of its own so that the lock is let go even if it panics.)
func (a *admission) enter(user string, w *waiter) (refused bool, hint time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u := a.users[user]
	if u == nil {
		u = &userLine{user: user}
		a.users[user] = u
	}
	switch {
	case a.running < a.slots && u.running < a.perUser && len(u.waiting) == 0:
		a.start(u, w)
	case len(u.waiting) < a.queue && a.queued < a.maxQueued:
		w.since = time.Now()
		u.waiting = append(u.waiting, w)
		a.queued++
		if !u.inTurns {
			u.inTurns = true
			a.turns = append(a.turns, u)
		}
	default:
		// The user's line is full (or everyone's): its running requests
		// free a place after about a read each.
		hint = a.mean * time.Duration(1+len(u.waiting)/max(1, a.perUser))
		a.forgetIdle(u)
		return true, min(max(hint, time.Millisecond), a.maxWait)
	}
	return false, 0
}

// start counts w as running and runs it. Called with a.mu held.
func (a *admission) start(u *userLine, w *waiter) {
	a.running++
	u.running++
	go w.run()
}

// done ends a request of user that took took, and starts the next ones in
// turn.
func (a *admission) done(user string, took time.Duration) {
	late, hint := a.leave(user, took)
	for _, w := range late {
		w.refuse(hint)
	}
}

// leave is done's part under the lock: it returns the requests found late.
func (a *admission) leave(user string, took time.Duration) (late []*waiter, hint time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mean += (took - a.mean) / 8
	u := a.users[user]
	a.running--
	u.running--
	// Each turn gives one waiting request to the next user that may run
	// one more; a user at its limit keeps its place for a later turn.
	for skipped := 0; a.running < a.slots && len(a.turns) > 0 && skipped < len(a.turns); {
		t := a.turns[0]
		a.turns = a.turns[1:]
		if t.running >= a.perUser {
			a.turns = append(a.turns, t)
			skipped++
			continue
		}
		skipped = 0
		w := t.waiting[0]
		t.waiting[0] = nil
		t.waiting = t.waiting[1:]
		a.queued--
		if len(t.waiting) > 0 {
			a.turns = append(a.turns, t)
		} else {
			t.inTurns = false
		}
		if time.Since(w.since) > a.maxWait {
			late = append(late, w)
			a.forgetIdle(t)
			continue
		}
		a.start(t, w)
	}
	a.forgetIdle(u)
	return late, max(a.mean, time.Millisecond)
}

// forgetIdle drops u's line once nothing of it runs or waits. Called with
// a.mu held.
func (a *admission) forgetIdle(u *userLine) {
	if u.running == 0 && len(u.waiting) == 0 && !u.inTurns {
		delete(a.users, u.user)
	}
}
