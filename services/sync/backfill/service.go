package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/process/health"
	"github.com/roomcast/roomcast/process/panicguard"
	"github.com/roomcast/roomcast/proto"
)

// service holds what the request handlers share.
type service struct {
	cfg Config
	log zerolog.Logger
	nc  *nats.Conn
	js  jetstream.JetStream
	// The readers of a room's history (service.readers); mode says which
	// are used. indexDirect is the index's reader for a stream of one
	// replica, indexChecked for a replicated one (checked with the leader).
	consumer     consumerReader
	walk         walkReader
	indexDirect  indexReader
	indexChecked indexReader
	mode         atomic.Int32
	index        *index
	removals     removals
	// streamCreated is stream ROOMS's creation time (ns) as last seen; the
	// index is reset when it changes.
	streamCreated atomic.Int64
	metrics       *metrics
	// guard stops a panic where a message enters: see docs/decisions.md.
	guard *panicguard.Guard

	admit    *admission     // when each request is read (admission.go)
	inflight sync.WaitGroup // requests taken and not yet answered
}

// Run serves sync.changes and sync.chat until ctx is done, then stops taking
// requests, finishes the ones in flight, drains and returns.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With().Str("service", "sync").Logger()
	idx := newIndex(cfg.IndexDepth, cfg.IndexRooms, cfg.TailMessages, cfg.TailBytes)
	m, err := newMetrics(cfg.Registry, func() float64 { return float64(idx.bytes()) }, func() float64 { return float64(idx.feedGaps()) })
	if err != nil {
		return err
	}
	nc, err := nats.Connect(cfg.NATSURL, append([]nats.Option{
		nats.Name("roomcast-sync"),
		nats.MaxReconnects(-1),
	}, cfg.NATSOptions...)...)
	if err != nil {
		return fmt.Errorf("sync: connect to NATS at %s: %w", cfg.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("sync: jetstream: %w", err)
	}
	s := &service{
		cfg:      cfg,
		log:      log,
		nc:       nc,
		js:       js,
		consumer: consumerReader{js: js, stream: proto.StreamRooms},
		walk:     newWalkReader(nc, proto.StreamRooms),
		index:    idx,
		metrics:  m,
		guard:    panicguard.New(log, func(where string) { m.panics.WithLabelValues(where).Inc() }),
		admit:    newAdmission(cfg.Concurrency, cfg.UserConcurrency, cfg.UserQueue, 64*cfg.Concurrency, cfg.QueueWait),
	}
	leader := newLeaderGetter(nc, proto.StreamRooms)
	s.indexDirect = indexReader{index: idx, walk: s.walk}
	s.indexChecked = indexReader{index: idx, walk: s.walk, leader: &leader}
	idx.panicHook = cfg.panicHook
	if cfg.serviceHook != nil {
		cfg.serviceHook(s)
	}
	// The sync service only reads stream ROOMS: it does not create it (its
	// NATS role may not), and answers unavailable until it exists; /readyz
	// says so.

	// Which stream the index will describe, learnt before the feed starts:
	// otherwise the first request, seeing the stream for the first time,
	// would have to throw away everything the index learnt until then (a
	// stream re-created since is still seen by that request). Best effort: a
	// stream that does not exist yet is learnt by the first request.
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	if stream, err := js.Stream(sctx, proto.StreamRooms); err == nil {
		s.learn(stream.CachedInfo())
	}
	scancel()

	// The index learns every room's latest sequences from the RePublish feed.
	// Without it (no permission to subscribe, a slow feed) reads are still
	// exact, only slower: see index.go.
	// A panic while observing may leave a room's chain half updated: the
	// index is a cache, so it is forgotten (reads go to the stream until
	// the feed teaches it again).
	feed, err := nc.Subscribe(cfg.Store.Subjects.LiveAll(), func(m *nats.Msg) {
		defer s.guard.Recover("feed", s.index.reset)
		s.index.observe(m.Header, m.Data)
	})
	if err != nil {
		return fmt.Errorf("sync: subscribe to %s: %w", cfg.Store.Subjects.LiveAll(), err)
	}
	if err := feed.SetPendingLimits(1<<16, 64<<20); err != nil {
		return fmt.Errorf("sync: %w", err)
	}

	svc, err := micro.AddService(nc, micro.Config{
		Name:        proto.ServiceSync,
		Version:     "0.1.0",
		Description: "roomcast: changes and chat messages of a room since a cursor, from stream ROOMS",
	})
	if err != nil {
		return fmt.Errorf("sync: add micro service: %w", err)
	}
	for _, e := range []struct {
		name, subject string
		fn            func(context.Context, []byte) (any, error)
	}{
		{endpointChanges, proto.SubjectSyncChanges, s.changes},
		{endpointChat, proto.SubjectSyncChat, s.chat},
	} {
		if err := svc.AddEndpoint(e.name, s.handler(ctx, e.name, e.fn), micro.WithEndpointSubject(e.subject)); err != nil {
			_ = svc.Stop()
			return fmt.Errorf("sync: add endpoint %s: %w", e.subject, err)
		}
	}

	var httpDone chan error
	if cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			_ = svc.Stop()
			return fmt.Errorf("sync: listen on %s: %w", cfg.HTTPAddr, err)
		}
		httpDone = make(chan error, 1)
		go func() { httpDone <- health.Serve(ctx, ln, cfg.Registry, s.ready, log) }()
	}
	log.Info().Msg("sync started")

	<-ctx.Done()
	// Stop taking requests, let the ones in flight answer, then drain.
	if err := svc.Stop(); err != nil {
		log.Warn().Err(err).Msg("stopping micro service")
	}
	s.inflight.Wait()
	_ = feed.Unsubscribe()
	if httpDone != nil {
		if err := <-httpDone; err != nil {
			log.Warn().Err(err).Msg("http server")
		}
	}
	err = nc.Drain()
	log.Info().Msg("sync stopped")
	return err
}

// handler runs fn for each request on a goroutine of its own, when
// admission lets it (at most Concurrency at once, shared fairly between the
// users the requests name): micro calls handlers one at a time per
// endpoint, so the handler itself never waits, and a reconnect storm or
// one user's flood must not queue everyone behind it.
func (s *service) handler(ctx context.Context, endpoint string, fn func(context.Context, []byte) (any, error)) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		arrived := time.Now()
		// A panic in admitting the request (the read itself runs under the
		// guard in run) is answered internal too.
		defer s.guard.Recover(endpoint, func() {
			s.respond(endpoint, req, arrived, nil, proto.Errorf(proto.CodeInternal, "internal error"))
		})
		if s.cfg.panicHook != nil {
			s.cfg.panicHook("admit")
		}
		if ctx.Err() != nil {
			s.respond(endpoint, req, arrived, nil, proto.Errorf(proto.CodeUnavailable, "sync is shutting down"))
			return
		}
		user := requestUser(req.Data())
		s.inflight.Add(1)
		s.admit.admit(user, &waiter{
			run: func() {
				defer s.inflight.Done()
				began := time.Now()
				defer func() { s.admit.done(user, time.Since(began)) }()
				// A read changes nothing: a panic is answered internal.
				defer s.guard.Recover(endpoint, func() {
					s.respond(endpoint, req, arrived, nil, proto.Errorf(proto.CodeInternal, "internal error"))
				})
				if s.cfg.panicHook != nil {
					s.cfg.panicHook(endpoint)
				}
				// The request outlives Run's ctx by design (it is answered
				// during shutdown), so it gets a context of its own.
				rctx, cancel := context.WithTimeout(context.Background(), s.cfg.MaxTime+5*time.Second)
				defer cancel()
				res, err := fn(rctx, req.Data())
				s.respond(endpoint, req, arrived, res, err)
			},
			refuse: func(retryAfter time.Duration) {
				defer s.inflight.Done()
				s.respond(endpoint, req, arrived, nil, proto.RateLimited(retryAfter,
					"too many history reads of this user in flight: retry after retryAfterMs"))
			},
		})
	})
}

// requestUser is the user a gateway named in a request (proto.
// HistoryRequest), "" for none (or a request that does not decode: parsing
// it again answers that).
func requestUser(data []byte) string {
	var r struct {
		UserID string `json:"userId"`
	}
	_ = json.Unmarshal(data, &r)
	return r.UserID
}

// respond sends res or err, and counts the request.
func (s *service) respond(endpoint string, req micro.Request, began time.Time, res any, err error) {
	code := "ok"
	var sendErr error
	if err != nil {
		var pe *proto.Error
		if !errors.As(err, &pe) {
			s.log.Error().Err(err).Str("endpoint", endpoint).Msg("request failed")
			pe = &proto.Error{Code: proto.CodeInternal, Message: "internal error"}
		} else if pe.Code == proto.CodeUnavailable {
			s.log.Warn().Err(err).Str("endpoint", endpoint).Msg("request failed")
		}
		code = string(pe.Code)
		sendErr = proto.Respond(s.nc, req.Reply(), nil, pe)
	} else {
		// Not req.RespondJSON: micro's request must not be used once its
		// handler has returned, and this runs on a goroutine of its own.
		sendErr = proto.Respond(s.nc, req.Reply(), res, nil)
	}
	if sendErr != nil {
		s.log.Warn().Err(sendErr).Str("endpoint", endpoint).Msg("could not send the reply")
	}
	s.metrics.requests.WithLabelValues(endpoint, code).Inc()
	s.metrics.duration.WithLabelValues(endpoint).Observe(time.Since(began).Seconds())
}

// maxPayload is the largest message the connection may send.
func (s *service) maxPayload() int64 {
	if p := s.nc.MaxPayload(); p > 0 {
		return p
	}
	return 1 << 20
}

// ready reports why the service cannot answer, nil when it can.
func (s *service) ready(ctx context.Context) error {
	if !s.nc.IsConnected() {
		return fmt.Errorf("not connected to NATS (%s)", s.nc.Status())
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.js.Stream(ctx, proto.StreamRooms); err != nil {
		return fmt.Errorf("stream %s: %v", proto.StreamRooms, err)
	}
	return nil
}
