package gateway

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/roomcast/roomcast/proto"
)

// metrics are the gateway's Prometheus series, all named
// roomcast_gateway_*, on the injected registry.
type metrics struct {
	sockets         prometheus.Gauge
	rooms           prometheus.Gauge
	subscriptions   prometheus.Gauge
	messagesIn      prometheus.Counter
	messagesOut     prometheus.Counter
	deflated        prometheus.Counter
	deflatedBytes   *prometheus.CounterVec
	unrouted        prometheus.Counter
	dropped         *prometheus.CounterVec
	refused         *prometheus.CounterVec
	fanoutSeconds   prometheus.Histogram
	slowDisconnects prometheus.Counter
	authFailures    *prometheus.CounterVec
	calls           *prometheus.CounterVec
	badFrames       *prometheus.CounterVec
	acceptErrors    *prometheus.CounterVec
	limitedFrames   prometheus.Counter
	panics          *prometheus.CounterVec
	recoveries      *prometheus.CounterVec
	replayed        prometheus.Counter
	sessionWrites   *prometheus.CounterVec
	sessionBytes    prometheus.Counter
	fanoutBatched   prometheus.Gauge
	// fanoutDropped is registered by New: it reads the gateway's rooms.
	fanoutDropped prometheus.CounterFunc
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "roomcast", "gateway"
	m := &metrics{
		sockets: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "sockets",
			Help: "Connected (authenticated) sockets."}),
		rooms: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "rooms",
			Help: "Rooms with local members (a board and its tasks and sprints rooms count once)."}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "subscriptions",
			Help: "NATS subscriptions for rooms and chats."}),
		messagesIn: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "messages_in_total",
			Help: "Room messages received from NATS."}),
		messagesOut: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "messages_out_total",
			Help: "Broadcast frames queued to sockets (one per recipient)."}),
		deflated: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "deflated_messages_total",
			Help: "Broadcasts compressed (permessage-deflate): once per message, whatever the number of members that negotiated it."}),
		deflatedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "deflated_bytes_total",
			Help: "Bytes of the compressed broadcasts' frames, plain (before) and compressed (after), counted once per message."}, []string{"frame"}),
		unrouted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "messages_unrouted_total",
			Help: "Room messages received for a room with no local member: with shared personal subscriptions, mostly the personal messages of other gateways' users (see ROOMCAST_PERSONAL_SUBSCRIPTIONS)."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "messages_dropped_total",
			Help: "Room messages lost before they reached the gate, by reason (slow_consumer: a callback subscription's pending buffer overflowed; counted once each time it does, not per message). A full fan-out channel is counted in fanout_dropped_total."}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "refused_total",
			Help: "Room messages the envelope gate refused (proto.CheckEnvelope) and no socket received, by reason: roomstate and sync refuse the same ones."}, []string{"reason"}),
		fanoutSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "fanout_seconds",
			Help:    "Time to queue one room message to every local member.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}),
		slowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "slow_consumer_disconnects_total",
			Help: "Sockets disconnected because their send queue overflowed."}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "auth_failures_total",
			Help: "Refused CONNECTs and expired tokens, by reason."}, []string{"reason"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "endpoint_calls_total",
			Help: "Endpoint calls by endpoint and result code (ok or an error code)."}, []string{"endpoint", "code"}),
		badFrames: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "bad_frames_total",
			Help: "Frames that closed their socket, by kind."}, []string{"kind"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "accept_errors_total",
			Help: "Failed accepts of new connections (each retried after a pause, 5 ms doubling to 1 s), by error: emfile and enfile mean out of file descriptors."}, []string{"error"}),
		limitedFrames: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "frames_limited_total",
			Help: "Inbound frames beyond their socket's rate limit: dropped, or answered rate_limited."}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "panics_total",
			Help: "Panics stopped at a message boundary, logged with their stack, by where: fanout, personal, kick, revoke, revocation, presence, endpoint (docs/decisions.md says what each does to the message)."}, []string{"where"}),
		recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "recoveries_total",
			Help: "CONNECTs that asked for a session back (connection state recovery), by result: recovered, or why it was a new session (unknown, other_user, bad_offset, history_cut, forbidden, too_much, failed)."}, []string{"result"}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "replayed_total",
			Help: "Broadcasts read again from the stream and sent to recovered sockets."}),
		sessionWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "session_records_total",
			Help: "Session records written to KV SESSIONS as sockets were cut, by result (written: sent; failed: not stored, that session cannot be recovered)."}, []string{"result"}),
		sessionBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "session_record_bytes_total",
			Help: "Bytes of the session records written."}),
		fanoutBatched: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "fanout_batched_workers",
			Help: "Fan-out workers sending through io_uring, up to 64 sockets per system call (0: each socket is written with its own writev: io_uring missing or refused here, or ROOMCAST_WRITEV_ONLY)."}),
	}
	for _, c := range []prometheus.Collector{m.recoveries, m.replayed, m.sessionWrites, m.sessionBytes, m.sockets, m.rooms, m.subscriptions, m.messagesIn, m.messagesOut, m.deflated, m.deflatedBytes, m.unrouted, m.dropped, m.refused,
		m.fanoutSeconds, m.slowDisconnects, m.authFailures, m.calls, m.badFrames, m.acceptErrors, m.limitedFrames, m.panics, m.fanoutBatched} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range proto.Reasons {
		m.refused.WithLabelValues(string(r))
	}
	return m, nil
}

// registerShared registers collectors that several services in one process
// may all want (Go and process metrics): already registered is fine.
func registerShared(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
