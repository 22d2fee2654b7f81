package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBucketsCoverEveryValueOnce(t *testing.T) {
	// bucket bounds tile [0, MaxInt64] with no gap and no overlap
	var next int64
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketBounds(i)
		require.Equal(t, next, lo, "bucket %d starts where %d ended", i, i-1)
		require.GreaterOrEqual(t, hi, lo)
		require.Equal(t, i, bucketOf(lo), "lo of bucket %d", i)
		require.Equal(t, i, bucketOf(hi), "hi of bucket %d", i)
		if hi == math.MaxInt64 {
			require.Equal(t, numBuckets-1, i, "the last bucket ends at MaxInt64")
			return
		}
		next = hi + 1
	}
	t.Fatalf("buckets end at %d, before MaxInt64", next)
}

func TestBucketPrecision(t *testing.T) {
	// every value is within 1/2^subBits of its bucket's highest value
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		v := r.Int64N(int64(100 * time.Second))
		_, hi := bucketBounds(bucketOf(v))
		require.GreaterOrEqual(t, hi, v)
		require.LessOrEqual(t, float64(hi-v), float64(v)/subCount+1, "value %d, bucket top %d", v, hi)
	}
}

func TestQuantilesAgainstSorting(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	h := NewHistogram()
	var vals []int64
	for range 50000 {
		// log-normal-ish latencies from 50µs to seconds
		v := int64(math.Exp(r.NormFloat64()*1.5+13)) + 50000
		vals = append(vals, v)
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := h.Quantile(q)
		require.GreaterOrEqual(t, got, exact, "q%.3f", q)
		require.LessOrEqual(t, float64(got-exact), float64(exact)/subCount+1, "q%.3f: got %d, exact %d", q, got, exact)
	}
	require.Equal(t, vals[len(vals)-1], h.Max())
	require.Equal(t, vals[0], h.Min())
	require.Equal(t, vals[len(vals)-1], h.Quantile(1))
	require.Equal(t, uint64(len(vals)), h.Count())
}

func TestEmptyHistogram(t *testing.T) {
	h := NewHistogram()
	require.Zero(t, h.Quantile(0.99))
	require.Zero(t, h.Max())
	require.Zero(t, h.Min())
	require.Zero(t, h.Mean())
	require.Equal(t, Summary{}, h.Summary())
}

func TestRecordIsSafeConcurrently(t *testing.T) {
	h := NewHistogram()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10000 {
				h.Record(int64(g*10000 + i))
			}
		}()
	}
	wg.Wait()
	require.Equal(t, uint64(80000), h.Count())
	require.Equal(t, int64(79999), h.Max())
	require.Equal(t, int64(0), h.Min())
}

func TestMergeAndDataRoundTrip(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for i := int64(1); i <= 1000; i++ {
		a.Record(i * 1000)
		b.Record(i * 1_000_000)
	}
	a.Record(-5) // a clock step counts as 0
	d := b.Data()
	b2, err := HistogramFromData(d)
	require.NoError(t, err)
	require.Equal(t, b.Summary(), b2.Summary())

	a.Merge(b2)
	require.Equal(t, uint64(2001), a.Count())
	require.Equal(t, int64(1_000_000_000), a.Max())
	require.Equal(t, int64(0), a.Min())
	// the median is now the top of a's values: 1ms
	require.InDelta(t, float64(time.Millisecond), float64(a.Quantile(0.5)), float64(time.Millisecond)/subCount)

	_, err = HistogramFromData(HistogramData{Buckets: [][2]uint64{{numBuckets, 1}}})
	require.Error(t, err, "a bucket index out of range is refused")
}
