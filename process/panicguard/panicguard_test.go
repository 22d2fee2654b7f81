package panicguard_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/panicguard"
)

func TestRecover(t *testing.T) {
	var logs bytes.Buffer
	counts := map[string]int{}
	g := panicguard.New(zerolog.New(&logs), func(where string) { counts[where]++ })

	// A panic stops at the boundary; undo runs; the caller goes on.
	undone := false
	func() {
		defer g.Recover("feed", func() { undone = true })
		var m map[string]int
		m["x"] = 1 // assignment to a nil map: a runtime panic
	}()
	require.True(t, undone)
	require.Equal(t, map[string]int{"feed": 1}, counts)
	var line struct{ Level, Where, Panic, Stack, Message string }
	require.NoError(t, json.Unmarshal(logs.Bytes(), &line))
	require.Equal(t, "error", line.Level)
	require.Equal(t, "feed", line.Where)
	require.Contains(t, line.Panic, "nil map")
	require.Contains(t, line.Stack, "panicguard_test.TestRecover", "the stack names the panicking function")

	// No panic: nothing is counted, undo does not run.
	undone = false
	func() { defer g.Recover("feed", func() { undone = true }) }()
	require.False(t, undone)
	require.Equal(t, 1, counts["feed"])

	// A panic in undo is stopped and counted as well.
	func() {
		defer g.Recover("kick", func() { panic("undo failed too") })
		panic("kick failed")
	}()
	require.Equal(t, 1, counts["kick"])
	require.Equal(t, 1, counts["kick/undo"])

	// Do says whether fn panicked.
	require.False(t, g.Do("get", func() {}))
	require.True(t, g.Do("get", func() { panic(42) }))
	require.Equal(t, 1, counts["get"])

	// A nil count is allowed.
	require.True(t, panicguard.New(zerolog.Nop(), nil).Do("x", func() { panic("x") }))
}
