package gateway

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDeepWorkers: every call runs once and returns its own result, calls
// in parallel get workers of their own, and at most maxIdleWorkers stay.
func TestDeepWorkers(t *testing.T) {
	var w deepWorkers
	const calls = 3 * maxIdleWorkers
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(calls)
	results := make([]bool, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = w.run(func() bool {
				started.Done()
				<-release // all calls at once: each needs its own worker
				return i%2 == 0
			})
		}()
	}
	started.Wait()
	close(release)
	wg.Wait()
	for i, r := range results {
		require.Equal(t, i%2 == 0, r, "call %d", i)
	}
	require.Eventually(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.idle) == maxIdleWorkers
	}, 5e9, 1e6)
	require.True(t, w.run(func() bool { return true }))
}

// TestDeepWorkersReturnAfterOwnCall: run returns only once its own call has
// run. A worker that listed itself idle before its caller had received the
// result let another caller take that result and go on early, its frame
// buffer then reused under the call still reading it; with many callers
// per core that happened a few times in 400,000 calls here, every run.
func TestDeepWorkersReturnAfterOwnCall(t *testing.T) {
	var w deepWorkers
	var early atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				var finished atomic.Bool
				w.run(func() bool { finished.Store(true); return true })
				if !finished.Load() {
					early.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	require.Zero(t, early.Load(), "calls that returned before their own function ran")
}
