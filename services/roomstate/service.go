package roomstate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/roomcast/roomcast/process/health"
	"github.com/roomcast/roomcast/process/panicguard"
	"github.com/roomcast/roomcast/proto"
)

// setupTimeout bounds connecting the stream, bucket and consumer at start.
const setupTimeout = 30 * time.Second

// Run serves until ctx is done, then finishes the batch in hand, answers the
// requests in flight, drains the connection and returns. Any number of
// replicas may run at once: they share one durable consumer and answer
// requests in one queue group.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger.With().Str("service", "roomstate").Logger()
	m := newMetrics(cfg.Registry)

	var ln net.Listener
	if cfg.HTTPAddr != "" {
		var err error
		if ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return fmt.Errorf("roomstate: listen on %s (ROOMCAST_ROOMSTATE_HTTP_ADDR): %w", cfg.HTTPAddr, err)
		}
		defer ln.Close()
	}

	nc, err := nats.Connect(cfg.NATSURL, append([]nats.Option{
		nats.Name("roomcast-roomstate"),
		nats.MaxReconnects(-1),
	}, cfg.NATSOptions...)...)
	if err != nil {
		return fmt.Errorf("roomstate: connect to NATS at %s: %w", cfg.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("roomstate: jetstream: %w", err)
	}

	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	if !cfg.SkipEnsure {
		if err := proto.Ensure(sctx, js, cfg.Store); err != nil {
			return fmt.Errorf("roomstate: %w", err)
		}
	}
	kv, err := js.KeyValue(sctx, proto.BucketRoomState)
	if err != nil {
		return fmt.Errorf("roomstate: bucket %s: %w (is JetStream enabled, and was the bucket created?)", proto.BucketRoomState, err)
	}
	store := newStateStore(kv, m, log)
	store.nc = nc
	guard := panicguard.New(log, func(where string) { m.panics.WithLabelValues(where).Inc() })
	a := &api{nc: nc, store: store, log: log, sem: make(chan struct{}, maxInFlight), guard: guard, panicHook: cfg.panicHook}
	svc, err := addService(nc, a)
	if err != nil {
		return fmt.Errorf("roomstate: %w", err)
	}
	c := &consumer{
		js:       js,
		config:   consumerConfig(cfg),
		subjects: cfg.Store.Subjects,
		store:    store,
		batch:    cfg.BatchSize,
		wait:     cfg.BatchWait,
		m:        m,
		log:      log,
		running:  make(chan struct{}),
		guard:    guard,
		hook:     cfg.panicHook,
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.run(gctx) })
	if ln != nil {
		ready := func(context.Context) error {
			if !nc.IsConnected() {
				return errors.New("NATS not connected")
			}
			select {
			case <-c.running:
				return nil
			default:
				return errors.New("consumer not started")
			}
		}
		g.Go(func() error { return health.Serve(gctx, ln, cfg.Registry, ready, log) })
	}
	log.Info().Str("durable", cfg.Durable).Int("batch_size", cfg.BatchSize).Dur("batch_wait", cfg.BatchWait).Msg("roomstate started")
	err = g.Wait()

	stopErr := svc.Stop()
	a.wait()
	drainErr := nc.Drain()
	log.Info().Msg("roomstate stopped")
	return errors.Join(err, stopErr, drainErr)
}
