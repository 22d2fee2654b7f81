package gateway

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAuthzCacheFull: a full authorization cache is swept at most once a
// second, not at every join, and takes entries again once a sweep made room.
func TestAuthzCacheFull(t *testing.T) {
	a := &natsAuthorizer{cache: map[string]time.Time{}}
	now := time.Now()
	for i := range maxAuthzCache {
		a.cache["u"+strconv.Itoa(i)+"\x00board-b1"] = now.Add(30 * time.Second)
	}
	for range 1000 {
		require.False(t, a.roomLocked(now), "full of live entries")
	}
	require.Equal(t, 1, a.sweeps)
	require.False(t, a.roomLocked(now.Add(2*time.Second)), "still live")
	require.Equal(t, 2, a.sweeps)
	require.True(t, a.roomLocked(now.Add(time.Minute)), "expired: swept")
	require.Empty(t, a.cache)
}
