// Package panictest arms the panic hooks that services' tests set at their
// panicguard boundaries (Config.panicHook), so a test can make a chosen
// boundary panic and see the guard stop it.
package panictest

import "sync"

// Armed panics at a boundary as many times as it was armed there. Its zero
// value is armed nowhere; it is safe for concurrent use.
type Armed struct {
	mu sync.Mutex
	n  map[string]int
}

// Arm makes the next n calls of Hook at where panic.
func (a *Armed) Arm(where string, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = map[string]int{}
	}
	a.n[where] = n
}

// Hook is the service's panic hook: it panics ("injected at <where>") while
// where is armed, and returns otherwise.
func (a *Armed) Hook(where string) {
	a.mu.Lock()
	fire := a.n[where] > 0
	if fire {
		a.n[where]--
	}
	a.mu.Unlock()
	if fire {
		panic("injected at " + where)
	}
}
