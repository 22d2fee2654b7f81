package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// shutdownGrace bounds how long Run waits for HTTP handlers and NATS to
// drain after ctx is done.
const shutdownGrace = 5 * time.Second

// Run serves the gateway until ctx is done, then drains and returns. It
// returns an error only when the gateway could not start or failed.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger.With().Str("service", "gateway").Logger()

	nc, err := nats.Connect(cfg.NATSURL, append([]nats.Option{
		nats.Name("roomcast-gateway"),
		nats.MaxReconnects(-1),
	}, cfg.NATSOptions...)...)
	if err != nil {
		return fmt.Errorf("gateway: connect to NATS at %s: %w", cfg.NATSURL, err)
	}
	defer nc.Close()

	cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ln := cfg.Listener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("ROOMCAST_HTTP_ADDR=%s: %w", cfg.HTTPAddr, err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !nc.IsConnected() {
			http.Error(w, "nats: not connected", http.StatusServiceUnavailable)
			return
		}
		for name, check := range cfg.ReadyChecks {
			if err := check(); err != nil {
				http.Error(w, name+": "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	log.Info().Str("addr", ln.Addr().String()).Msg("gateway listening")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("gateway: serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		err := srv.Shutdown(sctx)
		if derr := nc.Drain(); derr != nil && err == nil {
			err = derr
		}
		log.Info().Msg("gateway stopped")
		return err
	})
	return g.Wait()
}
