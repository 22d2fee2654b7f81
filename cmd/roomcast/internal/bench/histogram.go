package bench

import (
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// subBits sets the histogram's precision: every power-of-two range of values
// is cut into 2^subBits equal buckets, so a recorded value is known to within
// 1/2^subBits (0.8 %) of itself, HDR-style, from 1 ns to the largest int64.
const subBits = 7

const (
	subCount   = 1 << subBits
	numBuckets = (64 - subBits) << subBits // the top bucket ends at MaxInt64
)

// Histogram is a log-linear latency histogram in nanoseconds. Record is safe
// for concurrent use by every socket goroutine (atomic adds, no lock); reading
// it while recording gives a snapshot that is good enough for progress.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	total  atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Int64
	min    atomic.Int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(math.MaxInt64)
	return h
}

// bucketOf maps v ≥ 0 to its bucket: values below subCount have a bucket of
// their own; above, the top subBits+1 bits choose it.
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	msb := bits.Len64(uint64(v)) - 1
	shift := msb - subBits
	sub := int(uint64(v) >> uint(shift)) // in [subCount, 2*subCount)
	return (shift+1)<<subBits + sub - subCount
}

// bucketBounds are the smallest and largest values that map to bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	shift := i>>subBits - 1
	sub := int64(i&(subCount-1) + subCount)
	lo = sub << uint(shift)
	return lo, lo + (int64(1) << uint(shift)) - 1
}

// Record adds one value; negative values (clock steps) count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(uint64(v))
	for m := h.max.Load(); v > m && !h.max.CompareAndSwap(m, v); m = h.max.Load() {
	}
	for m := h.min.Load(); v < m && !h.min.CompareAndSwap(m, v); m = h.min.Load() {
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total.Load() }

// Max is the largest recorded value, 0 when empty.
func (h *Histogram) Max() int64 { return h.max.Load() }

// Min is the smallest recorded value, 0 when empty.
func (h *Histogram) Min() int64 {
	if h.Count() == 0 {
		return 0
	}
	return h.min.Load()
}

// Mean is the average recorded value, 0 when empty.
func (h *Histogram) Mean() float64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile is the value below or at which a fraction q of the recorded
// values lie: the highest value of the bucket that holds the q-th value
// (never above Max), as HDR histograms report it. 0 when empty.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			_, hi := bucketBounds(i)
			return min(hi, h.Max())
		}
	}
	return h.Max()
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.total.Add(o.total.Load())
	h.sum.Add(o.sum.Load())
	if o.Count() > 0 {
		for m := h.max.Load(); o.Max() > m && !h.max.CompareAndSwap(m, o.Max()); m = h.max.Load() {
		}
		for m := h.min.Load(); o.Min() < m && !h.min.CompareAndSwap(m, o.Min()); m = h.min.Load() {
		}
	}
}

// HistogramData is a histogram on the wire between the load tool's
// processes: the non-empty buckets only.
type HistogramData struct {
	Buckets [][2]uint64 `json:"buckets"` // [bucket index, count]
	Sum     uint64      `json:"sum"`
	Min     int64       `json:"min"`
	Max     int64       `json:"max"`
}

// Data exports h.
func (h *Histogram) Data() HistogramData {
	d := HistogramData{Sum: h.sum.Load(), Min: h.Min(), Max: h.Max()}
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			d.Buckets = append(d.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return d
}

// HistogramFromData rebuilds an exported histogram, refusing bucket indexes
// that do not exist.
func HistogramFromData(d HistogramData) (*Histogram, error) {
	h := NewHistogram()
	for _, b := range d.Buckets {
		if b[0] >= numBuckets {
			return nil, fmt.Errorf("histogram: bucket %d out of range (have %d)", b[0], numBuckets)
		}
		h.counts[b[0]].Add(b[1])
		h.total.Add(b[1])
	}
	h.sum.Store(d.Sum)
	if h.Count() > 0 {
		h.max.Store(d.Max)
		h.min.Store(d.Min)
	}
	return h, nil
}

// Summary is the latency line of a report.
type Summary struct {
	Count uint64        `json:"count"`
	P50   time.Duration `json:"p50"`
	P90   time.Duration `json:"p90"`
	P99   time.Duration `json:"p99"`
	P999  time.Duration `json:"p999"`
	Max   time.Duration `json:"max"`
	Mean  time.Duration `json:"mean"`
}

// Summary reads the usual quantiles.
func (h *Histogram) Summary() Summary {
	return Summary{
		Count: h.Count(),
		P50:   time.Duration(h.Quantile(0.50)),
		P90:   time.Duration(h.Quantile(0.90)),
		P99:   time.Duration(h.Quantile(0.99)),
		P999:  time.Duration(h.Quantile(0.999)),
		Max:   time.Duration(h.Max()),
		Mean:  time.Duration(h.Mean()),
	}
}
