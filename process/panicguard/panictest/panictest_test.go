package panictest

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestArmed: a boundary panics as many times as it was armed, then not;
// other boundaries never; concurrent hooks fire exactly the armed count.
func TestArmed(t *testing.T) {
	var a Armed
	require.NotPanics(t, func() { a.Hook("fold") }, "the zero value is armed nowhere")
	a.Arm("fold", 2)
	require.NotPanics(t, func() { a.Hook("write") })
	require.PanicsWithValue(t, "injected at fold", func() { a.Hook("fold") })
	require.PanicsWithValue(t, "injected at fold", func() { a.Hook("fold") })
	require.NotPanics(t, func() { a.Hook("fold") })

	a.Arm("loop", 5)
	var mu sync.Mutex
	fired := 0
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			defer func() {
				if recover() != nil {
					mu.Lock()
					fired++
					mu.Unlock()
				}
			}()
			a.Hook("loop")
		})
	}
	wg.Wait()
	require.Equal(t, 5, fired)
}
