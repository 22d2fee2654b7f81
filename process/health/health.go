// Package health serves a service's /healthz, /readyz and /metrics: the
// HTTP side of roomstate and sync (the gateway serves them beside its
// sockets, on its own server).
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// shutdownGrace bounds how long Serve waits for requests in flight once ctx
// is done.
const shutdownGrace = 5 * time.Second

// Handler answers /healthz 200 while the process serves, /readyz 200 when
// ready returns nil (503 with its error otherwise; it gets the request's
// context) and /metrics from reg.
func Handler(reg *prometheus.Registry, ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	return mux
}

// Serve serves Handler on ln until ctx is done, then shuts the server down
// (5 s at most for requests in flight) and returns nil; it returns early
// with the error if serving fails. ln is closed when it returns.
func Serve(ctx context.Context, ln net.Listener, reg *prometheus.Registry, ready func(context.Context) error, log zerolog.Logger) error {
	srv := &http.Server{Handler: Handler(reg, ready), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Msg("serving /healthz, /readyz, /metrics")
	select {
	case err := <-done:
		return fmt.Errorf("health: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
