package health_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/health"
)

func TestServe(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "roomcast_test_total", Help: "A test counter."})
	reg.MustRegister(c)
	c.Add(3)
	var notReady atomic.Pointer[error]
	ready := func(ctx context.Context) error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return ctx.Err()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- health.Serve(ctx, ln, reg, ready, zerolog.Nop()) }()

	get := func(method, path string) (int, string) {
		req, err := http.NewRequest(method, "http://"+ln.Addr().String()+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("GET", "/healthz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", body)
	code, body = get("GET", "/readyz")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ready\n", body)
	code, body = get("GET", "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "roomcast_test_total 3")

	// Not ready: 503 with the reason; still healthy.
	why := errors.New("consumer not started")
	notReady.Store(&why)
	code, body = get("GET", "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "not ready: consumer not started\n", body)
	code, _ = get("GET", "/healthz")
	require.Equal(t, http.StatusOK, code)

	// Only GET, only these paths.
	code, _ = get("POST", "/healthz")
	require.Equal(t, http.StatusMethodNotAllowed, code)
	code, _ = get("GET", "/debug/pprof/")
	require.Equal(t, http.StatusNotFound, code)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	_, err = net.Dial("tcp", ln.Addr().String())
	require.Error(t, err, "the listener is closed")
}

// TestServeFails: a listener that fails makes Serve return its error at
// once, without waiting for ctx.
func TestServeFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, ln.Close())
	err = health.Serve(context.Background(), ln, prometheus.NewRegistry(), func(context.Context) error { return nil }, zerolog.Nop())
	require.ErrorIs(t, err, net.ErrClosed)
}
