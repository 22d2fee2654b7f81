package gateway

import (
	"sync"
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
