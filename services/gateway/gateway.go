package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/roomcast/roomcast/process/panicguard"
	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway/internal/engineio"
)

// shutdownGrace bounds how long Run waits for plain HTTP handlers and for
// NATS to drain after the sockets are gone.
const shutdownGrace = 5 * time.Second

// Gateway is one running gateway: its sockets, rooms and subscriptions.
type Gateway struct {
	cfg      Config
	log      zerolog.Logger
	nc       *nats.Conn
	subjects proto.Subjects
	verifier *tokenVerifier
	authz    authorizer
	m        *metrics
	// guard stops a panic where a NATS message or a socket's packet enters
	// the gateway's code: see docs/decisions.md.
	guard    *panicguard.Guard
	presence *presence
	revoked  revocations
	// revKV is KV REVOCATIONS, set by watchRevocations before the control
	// subscriptions exist (nil if it was never bound).
	revKV jetstream.KeyValue
	// sessions is KV SESSIONS, bound by New when recovery is on (nil:
	// off); highSeq the highest stream sequence the fan-out has seen.
	sessions *sessions
	highSeq  atomic.Uint64
	// subEpoch counts the rooms' subscriptions made (roomOwn.epoch).
	subEpoch atomic.Uint64
	// chatsSeen and startSeq: whether a user's chats may have had a
	// message since a sequence (recovery_read.go, newChats).
	chatsSeen chatsSeen
	startSeq  uint64

	rooms  roomTable
	users  userTable
	deep   deepWorkers
	poller *engineio.Poller // nil: a reader goroutine per socket
	// The transport layer: the handshake and upgrades, and the settings
	// every WebSocket shares (transportSetup).
	eio    engineio.Server
	wsOpts engineio.Options
	states stateReader
	hb     heartbeats
	fanout []chan *nats.Msg

	// cooldowns: users whose socket was closed for flooding, refused at
	// CONNECT for a moment (cooldown.go).
	cooldowns cooldowns

	// droppedFull counts the messages dropped for a full fan-out channel
	// outside the live subscriptions' own counts (fanoutDropped).
	droppedFull atomic.Uint64

	closeOnce sync.Once

	draining atomic.Bool
	// notAccepting is the listener's last accept error while accepts fail
	// (nil: accepting), for /readyz.
	notAccepting atomic.Pointer[string]
}

// Run serves the gateway until ctx is done, then drains and returns. It
// returns an error only when the gateway could not start or failed.
func Run(ctx context.Context, cfg Config) error {
	g, err := New(cfg)
	if err != nil {
		return err
	}
	return g.Run(ctx)
}

// New checks cfg, connects to NATS and makes the poller's descriptors; it
// starts no goroutine of its own. Run serves and closes the gateway when it
// returns; a gateway that is never run must be closed with Close. Most
// callers want the package-level Run; tests use New to look inside.
func New(cfg Config) (*Gateway, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v, err := newTokenVerifier(cfg)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	if err := registerShared(cfg.Registry, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("service", "gateway").Str("gateway", cfg.GatewayID).Logger(),
		subjects: cfg.Store.Subjects,
		verifier: v,
		m:        m,
	}
	m.fanoutDropped = prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "roomcast", Subsystem: "gateway", Name: "fanout_dropped_total",
		Help: "Room messages dropped because their fan-out channel was full; clients see the gap in seq/prevSeq and read it again."}, g.fanoutDropped)
	if err := cfg.Registry.Register(m.fanoutDropped); err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	g.guard = panicguard.New(g.log, func(where string) { m.panics.WithLabelValues(where).Inc() })
	g.rooms.init()
	g.revoked.init(cfg.Store.MaxTokenLifetime)
	g.users.init()
	g.hb.init()
	g.fanout = make([]chan *nats.Msg, cfg.FanoutWorkers)
	for i := range g.fanout {
		g.fanout[i] = make(chan *nats.Msg, cfg.FanoutQueue)
	}
	g.nc, err = nats.Connect(cfg.NATSURL, append([]nats.Option{
		nats.Name("roomcast-gateway " + cfg.GatewayID),
		nats.MaxReconnects(-1),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			// A channel subscription's slow consumer is a full fan-out
			// channel, counted per message in fanout_dropped_total.
			if errors.Is(err, nats.ErrSlowConsumer) && (sub == nil || sub.Type() != nats.ChanSubscription) {
				g.m.dropped.WithLabelValues("slow_consumer").Inc()
			}
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			g.log.Warn().Err(err).Str("subject", subject).Msg("NATS error")
		}),
	}, cfg.NATSOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("gateway: connect to NATS at %s: %w", cfg.NATSURL, err)
	}
	if cfg.RecoveryTTL > 0 {
		if err := g.bindSessions(context.Background()); err != nil {
			g.nc.Close()
			return nil, fmt.Errorf("gateway: connection state recovery: %w", err)
		}
	}
	g.authz = &natsAuthorizer{nc: g.nc, timeout: cfg.AuthzTimeout, ttl: cfg.AuthzCacheTTL, optional: cfg.AuthzOptional, log: g.log, cache: map[string]time.Time{}}
	g.presence = newPresence(g)
	g.states.g = g
	if !cfg.ReadGoroutines {
		if p, err := engineio.NewPoller(); err == nil {
			g.poller = p
		}
	}
	g.transportSetup()
	return g, nil
}

// Close releases what New took: the NATS connection and the poller's
// descriptors. Run closes the gateway as it returns; Close is for a gateway
// made with New and never run. Calls after the first do nothing.
func (g *Gateway) Close() {
	g.closeOnce.Do(func() {
		g.nc.Close()
		if g.poller != nil {
			g.poller.Close()
		}
		g.hb.stop()
	})
}

// Run serves until ctx is done, then drains: it stops accepting sockets,
// disconnects the connected ones over DrainGrace (a transport close, so
// clients reconnect, elsewhere), and drains NATS. Every goroutine it starts
// (the server, fan-out workers, presence, the sweeper, the poller, the
// revocations watcher) has returned when it returns, and the gateway is
// closed.
func (g *Gateway) Run(ctx context.Context) error {
	cfg := g.cfg
	defer g.Close()
	var err error
	ln := cfg.Listener
	if ln == nil {
		ln, err = Listen(ctx, cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("ROOMCAST_HTTP_ADDR=%s: %w", cfg.HTTPAddr, err)
		}
	}
	// The listener is Run's: closed here if Run fails before serving, by
	// the server's Shutdown after.
	serving := false
	defer func() {
		if !serving {
			_ = ln.Close()
		}
	}()
	// Revocations first: a revoke recorded before this gateway started
	// refuses its tokens from the first CONNECT, and one published from now
	// on reaches the watcher even if the control message comes first.
	stopRevocations, err := g.watchRevocations(ctx)
	if err != nil {
		return fmt.Errorf("gateway: revocations: %w", err)
	}
	defer stopRevocations()
	ctl, err := g.subscribeControl()
	if err != nil {
		return fmt.Errorf("gateway: subscribe to control subjects: %w", err)
	}
	var personal []*nats.Subscription
	if cfg.PersonalSubscriptions == PersonalShared {
		if personal, err = g.subscribePersonal(); err != nil {
			return fmt.Errorf("gateway: personal rooms: %w", err)
		}
	}
	svc, err := g.addPresenceService()
	if err != nil {
		return fmt.Errorf("gateway: presence service: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /socket.io/", &g.eio)
	mux.Handle("POST /socket.io/", &g.eio) // long-polling's packets
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", g.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: cfg.HTTPReadHeaderTimeout, IdleTimeout: cfg.HTTPIdleTimeout}
	srv.RegisterOnShutdown(g.eio.LetGo)
	// Socket.IO upgrades are served by the listener itself; net/http gets
	// the rest (health, metrics, pprof).
	ln = g.SocketIOListener(ln)

	g.log.Info().Str("addr", ln.Addr().String()).Msg("gateway listening")
	serving = true
	eg, gctx := errgroup.WithContext(ctx)
	// done ends presence and the sweeper; workers ends the fan-out workers,
	// after NATS has drained into them.
	done, workers, presenceDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var fanout sync.WaitGroup
	for _, ch := range g.fanout {
		fanout.Add(1)
		eg.Go(func() error { defer fanout.Done(); g.runFanout(ch, workers); return nil })
	}
	eg.Go(func() error { defer close(presenceDone); g.presence.run(done); return nil })
	eg.Go(func() error { g.runSweeper(done); return nil })
	if g.poller != nil {
		eg.Go(func() error { g.poller.Run(); return nil })
	}
	eg.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("gateway: serve: %w", err)
		}
		return nil
	})
	eg.Go(func() error {
		<-gctx.Done()
		g.draining.Store(true)
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		err := srv.Shutdown(sctx)
		g.drainSockets()
		g.flushSessions()
		close(done)
		<-presenceDone
		for _, sub := range append(ctl, personal...) {
			_ = sub.Unsubscribe()
		}
		_ = svc.Stop()
		if derr := g.drainNATS(); derr != nil && err == nil {
			err = derr
		}
		close(workers)
		fanout.Wait()
		if g.poller != nil {
			g.poller.Stop()
		}
		g.deep.stop()
		g.hb.stop()
		g.log.Info().Msg("gateway stopped")
		return err
	})
	return eg.Wait()
}

// drainSockets disconnects every socket over DrainGrace, in steps, so that
// their reconnects spread over time instead of hitting the other gateways
// at once. A WebSocket close "going away" (not a Socket.IO DISCONNECT) makes
// the stock client reconnect by itself.
func (g *Gateway) drainSockets() {
	sockets := g.allSockets()
	if len(sockets) == 0 {
		return
	}
	const steps = 10
	per := (len(sockets) + steps - 1) / steps
	pause := g.cfg.DrainGrace / steps
	g.log.Info().Int("sockets", len(sockets)).Dur("grace", g.cfg.DrainGrace).Msg("draining sockets")
	for i := 0; i < len(sockets); i += per {
		if i > 0 {
			time.Sleep(pause)
		}
		for _, s := range sockets[i:min(i+per, len(sockets))] {
			s.cut("gateway draining", engineio.CloseGraceful, goingAwayFrame)
		}
	}
	// Sockets that connected during the drain (a handler that was already
	// past the draining check).
	for _, s := range g.allSockets() {
		s.cut("gateway draining", engineio.CloseGraceful, goingAwayFrame)
	}
}

// flushSessions waits (at most shutdownGrace) for the session records of
// the sockets the drain cut to be stored: their clients come back for them.
func (g *Gateway) flushSessions() {
	if g.sessions == nil {
		return
	}
	select {
	case <-g.sessions.js.PublishAsyncComplete():
	case <-time.After(shutdownGrace):
		g.log.Warn().Int("pending", g.sessions.js.PublishAsyncPending()).Msg("session records still not stored at shutdown: those sessions cannot be recovered")
	}
}

func (g *Gateway) drainNATS() error {
	closed := make(chan struct{})
	g.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := g.nc.Drain(); err != nil {
		return err
	}
	select {
	case <-closed:
	case <-time.After(shutdownGrace):
		return fmt.Errorf("gateway: NATS drain took longer than %s", shutdownGrace)
	}
	return nil
}

func (g *Gateway) serveReady(w http.ResponseWriter, r *http.Request) {
	if g.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if err := g.notAccepting.Load(); err != nil {
		http.Error(w, "not accepting: "+*err, http.StatusServiceUnavailable)
		return
	}
	if !g.nc.IsConnected() {
		http.Error(w, "nats: not connected", http.StatusServiceUnavailable)
		return
	}
	for name, check := range g.cfg.ReadyChecks {
		if err := check(); err != nil {
			http.Error(w, name+": "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ready")
}

// Listen listens on addr for the gateway's sockets and HTTP endpoints, with
// no TCP keepalive on accepted connections: Engine.IO's pings find dead
// peers, and the keepalive options cost several setsockopt calls per
// accepted socket (~2.5 % of the gateway's CPU in a reconnect storm).
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(ctx, "tcp", addr)
}
