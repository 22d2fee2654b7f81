package bench

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestInterleave checks the interleaved room's changes land in the last
// tenth of the background, in order, apart from each other, and that a
// background too short to hold them apart gets none.
func TestInterleave(t *testing.T) {
	plan := interleave(1_000_000, 100)
	require.Len(t, plan, 100)
	require.Equal(t, 900_000, plan[0])
	for i := 1; i < len(plan); i++ {
		require.Equal(t, 1000, plan[i]-plan[i-1])
	}
	require.Less(t, plan[99], 1_000_000)

	require.Nil(t, interleave(500, 100), "50 background messages cannot hold 100 changes apart")
	require.Nil(t, interleave(0, 100))
	require.Len(t, interleave(1000, 100), 100)
}
