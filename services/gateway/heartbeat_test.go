package gateway

import (
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHeartbeatsHeapOrder: sockets come off the heap soonest first, whatever
// order they were scheduled, rescheduled and cancelled in.
func TestHeartbeatsHeapOrder(t *testing.T) {
	var h heartbeats
	h.init()
	defer h.stop()
	const far = int64(1) << 62 // never due while the test runs
	socks := make([]*socket, 200)
	for i := range socks {
		socks[i] = &socket{hbIdx: -1}
		h.schedule(socks[i], far+int64(rand.IntN(1000)))
	}
	for i := 0; i < 100; i++ { // move some
		h.schedule(socks[rand.IntN(len(socks))], far+int64(rand.IntN(1000)))
	}
	cancelled := map[*socket]bool{}
	for i := 0; i < 50; i++ {
		s := socks[rand.IntN(len(socks))]
		h.cancel(s)
		cancelled[s] = true
		require.Equal(t, int32(-1), s.hbIdx)
	}
	require.Equal(t, len(socks)-len(cancelled), h.len())

	var want []int64
	for _, s := range socks {
		if !cancelled[s] {
			want = append(want, s.hbAt)
		}
	}
	sort.Slice(want, func(i, j int) bool { return want[i] < want[j] })
	var got []int64
	for h.len() > 0 {
		s := h.heap[0]
		for i, o := range h.heap {
			require.Equal(t, int32(i), o.hbIdx, "every socket knows its place")
		}
		got = append(got, s.hbAt)
		h.removeAt(0)
	}
	require.Equal(t, want, got)
}
