package roomstate

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomcast/roomcast/proto"
)

// metrics are the service's Prometheus metrics, registered on Config.Registry.
// Every replica registers its own; sum them across replicas.
type metrics struct {
	processed   prometheus.Counter
	skipped     *prometheus.CounterVec
	refused     *prometheus.CounterVec
	batches     prometheus.Counter
	writes      prometheus.Counter
	conflicts   prometheus.Counter
	writeErrors prometheus.Counter
	lagSeqs     prometheus.Gauge
	lagSeconds  prometheus.Histogram
	requests    *prometheus.CounterVec
	panics      *prometheus.CounterVec
	// multiUnanswered counts batched reads that got no answer (GetMany).
	multiUnanswered prometheus.Counter
}

// Reasons a message is skipped (label "reason" of skipped_messages_total)
// before the envelope gate sees it; the gate's refusals are refused_total,
// labelled with proto's reasons.
const (
	skipMetadata = "metadata" // not a JetStream message (no reply metadata)
)

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "roomcast", "roomstate"
	m := &metrics{
		processed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "messages_processed_total",
			Help: "Valid room messages folded into ROOM_STATE (counted once written and acked).",
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "skipped_messages_total",
			Help: "Messages terminated without effect before the envelope gate, by reason: metadata (not a JetStream message).",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "refused_total",
			Help: "Messages the envelope gate (proto.CheckEnvelope) refused, terminated without effect, by reason: the gateway and sync refuse the same ones.",
		}, []string{"reason"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "batches_total",
			Help: "Rounds of collapse, write and ack.",
		}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "kv_writes_total",
			Help: "Successful writes to KV ROOM_STATE (one per room per batch at most).",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "kv_conflicts_total",
			Help: "Compare-and-set writes refused because another writer got there first (then re-read and merged).",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "kv_write_errors_total",
			Help: "Room writes that failed after retries; their messages are redelivered.",
		}),
		lagSeqs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "lag_sequences",
			Help: "Messages of stream ROOMS not yet folded into ROOM_STATE: stream last sequence minus the last processed one.",
		}),
		lagSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "lag_seconds",
			Help:    "Per message, KV write time minus the message's stream timestamp.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60},
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "roomstate.get and roomstate.getmany requests answered, by endpoint and code (ok or an error code).",
		}, []string{"endpoint", "code"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "panics_total",
			Help: "Panics stopped at a message boundary, logged with their stack, by where: fold or write (the messages terminated, ROOM_STATE not written for them), loop (the consume loop started over), get or getmany (answered internal).",
		}, []string{"where"}),
		multiUnanswered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "batched_reads_unanswered_total",
			Help: "Batched reads of room states (getmany) that got no answer in time (a role that may not publish to $JS.API.DIRECT.GET.KV_ROOM_STATE, a stalled server): getmany reads key by key for a pause, then tries again.",
		}),
	}
	reg.MustRegister(m.multiUnanswered, m.processed, m.skipped, m.refused, m.batches, m.writes, m.conflicts, m.writeErrors, m.lagSeqs, m.lagSeconds, m.requests, m.panics)
	m.skipped.WithLabelValues(skipMetadata)
	for _, r := range proto.Reasons {
		m.refused.WithLabelValues(string(r))
	}
	return m
}
