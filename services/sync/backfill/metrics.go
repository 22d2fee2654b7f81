package backfill

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomcast/roomcast/proto"
)

// metrics are the service's Prometheus metrics, all named roomcast_sync_*.
type metrics struct {
	requests   *prometheus.CounterVec   // by endpoint and code ("ok" on success)
	scanned    *prometheus.CounterVec   // stream messages read, by endpoint
	duration   *prometheus.HistogramVec // by endpoint
	cuts       *prometheus.CounterVec   // answers cut short, by endpoint and reason
	refused    *prometheus.CounterVec   // stored messages the envelope gate refused, by reason
	incomplete *prometheus.CounterVec   // answers with complete:false, by endpoint
	reads      *prometheus.CounterVec   // history reads, by method (tail, index, direct, consumer)
	tailBytes  prometheus.GaugeFunc     // memory of the tail's logs
	feedGaps   prometheus.CounterFunc   // jumps in the feed's sequences
	panics     *prometheus.CounterVec   // panics stopped at a boundary, by where
}

func newMetrics(reg prometheus.Registerer, tailBytes, feedGaps func() float64) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_sync_requests_total",
			Help: "sync requests answered, by endpoint and code (ok on success).",
		}, []string{"endpoint", "code"}),
		scanned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_sync_messages_scanned_total",
			Help: "Stream messages read to answer sync requests, by endpoint.",
		}, []string{"endpoint"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "roomcast_sync_request_duration_seconds",
			Help:    "Time to answer a sync request, by endpoint.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"endpoint"}),
		cuts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_sync_cut_total",
			Help: "Answers cut short with a continuation cursor, by endpoint and reason (limit, scan, bytes, time, gap).",
		}, []string{"endpoint", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_sync_refused_total",
			Help: "Stored messages the envelope gate (proto.CheckEnvelope) refused, left out of an answer, by reason: counted each time a read meets one. The gateway and roomstate refuse the same ones.",
		}, []string{"reason"}),
		incomplete: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_sync_incomplete_total",
			Help: "Answers with complete:false (history no longer reaches back to the cursor), by endpoint.",
		}, []string{"endpoint"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_sync_reads_total",
			Help: "Reads of a room's history, by method: tail (from memory), index (direct gets of the sequences the index knows), direct (batched direct gets) or consumer (a short-lived consumer, when the stream does not allow direct gets or is replicated).",
		}, []string{"method"}),
		tailBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomcast_sync_tail_bytes",
			Help: "Memory of the bodies the tail keeps (the capacity of the rooms' logs), bounded by ROOMCAST_SYNC_TAIL_BYTES.",
		}, tailBytes),
		feedGaps: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomcast_sync_feed_gaps_total",
			Help: "Jumps in the stream sequences the RePublish feed delivered to sync (deliveries lost, e.g. a slow consumer): rooms written before one are read from the stream until they are written again.",
		}, feedGaps),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomcast_sync_panics_total",
			Help: "Panics stopped at a message boundary, logged with their stack, by where: feed (the index was reset), changes or chat (answered internal).",
		}, []string{"where"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.scanned, m.duration, m.cuts, m.refused, m.incomplete, m.reads, m.tailBytes, m.feedGaps, m.panics} {
		if err := reg.Register(c); err != nil {
			var dup prometheus.AlreadyRegisteredError
			if errors.As(err, &dup) {
				return nil, errors.New("sync: metrics already registered: run one sync service per registry")
			}
			return nil, err
		}
	}
	for _, r := range proto.Reasons {
		m.refused.WithLabelValues(string(r))
	}
	return m, nil
}
