// Command lb is the compose stack's load balancer in front of roomcast's
// gateways: HTTP and WebSocket, the least-busy ready gateway for a new
// session, and session affinity by the Engine.IO sid, which long-polling
// needs (every request of a polling session must reach the gateway that
// holds it). No image can be pulled where roomcast is tested, so this is
// built here instead of HAProxy; in production use the load balancer you
// have, with the same three rules (docs/operations.md).
//
//	LB_ADDR=:8080 LB_BACKENDS=gateway-1:8080,gateway-2:8080 lb
//
// A gateway is ready while its /readyz answers 200 (checked every
// LB_CHECK_INTERVAL); a draining one says 503 and gets no new session.
// GET /lb/status lists the gateways, ready or not, with their open requests
// (WebSockets included); GET /lb/healthz is 200 while one is ready.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	addr := env("LB_ADDR", ":8080")
	backends := env("LB_BACKENDS", "")
	interval, err := time.ParseDuration(env("LB_CHECK_INTERVAL", "1s"))
	if err != nil || interval <= 0 {
		log.Fatalf("LB_CHECK_INTERVAL=%q: want a positive duration like 1s", os.Getenv("LB_CHECK_INTERVAL"))
	}
	b, err := newBalancer(strings.Split(backends, ","))
	if err != nil {
		log.Fatalf("LB_BACKENDS=%q: %v", backends, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go b.check(ctx, interval)
	srv := &http.Server{Addr: addr, Handler: b, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close() // sockets reconnect through another lb, or this one restarted
	}()
	log.Printf("lb on %s, gateways %s", addr, backends)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// sessionTTL is how long an unused sid is remembered: longer than
// Engine.IO's ping interval plus timeout (25 s + 20 s), within which a live
// polling session always sends a request.
const sessionTTL = 2 * time.Minute

type backend struct {
	host   string // host:port
	proxy  *httputil.ReverseProxy
	ready  atomic.Bool
	active atomic.Int64 // requests in flight, open WebSockets included
}

type balancer struct {
	backends []*backend
	client   *http.Client // readiness checks

	mu       sync.Mutex
	sessions map[string]session // by Engine.IO sid; guarded by mu
}

type session struct {
	b    *backend
	seen time.Time
}

func newBalancer(hosts []string) (*balancer, error) {
	lb := &balancer{sessions: map[string]session{}, client: &http.Client{Timeout: time.Second}}
	for _, h := range hosts {
		if _, _, err := net.SplitHostPort(h); err != nil {
			return nil, fmt.Errorf("want host:port,host:port: %v", err)
		}
		be := &backend{host: h}
		be.proxy = &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(&url.URL{Scheme: "http", Host: h})
				r.SetXForwarded()
			},
			ModifyResponse: func(resp *http.Response) error { return lb.learn(be, resp) },
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				if !errors.Is(err, context.Canceled) {
					be.ready.Store(false) // until its next good check
				}
				http.Error(w, "gateway unavailable", http.StatusBadGateway)
			},
		}
		lb.backends = append(lb.backends, be)
	}
	if len(lb.backends) == 0 {
		return nil, errors.New("no gateway")
	}
	return lb, nil
}

func (lb *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/lb/healthz":
		if lb.pick("") == nil {
			http.Error(w, "no gateway ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
		return
	case "/lb/status":
		type status struct {
			Gateway string `json:"gateway"`
			Ready   bool   `json:"ready"`
			Active  int64  `json:"active"`
		}
		var st []status
		for _, be := range lb.backends {
			st = append(st, status{be.host, be.ready.Load(), be.active.Load()})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
		return
	}
	be := lb.pick(r.URL.Query().Get("sid"))
	if be == nil {
		http.Error(w, "no gateway ready", http.StatusServiceUnavailable)
		return
	}
	be.active.Add(1)
	defer be.active.Add(-1)
	be.proxy.ServeHTTP(w, r)
}

// pick is the gateway that holds session sid, if it is known and ready;
// otherwise the ready gateway with the fewest open requests.
func (lb *balancer) pick(sid string) *backend {
	if sid != "" {
		lb.mu.Lock()
		s, ok := lb.sessions[sid]
		if ok {
			s.seen = time.Now()
			lb.sessions[sid] = s
		}
		lb.mu.Unlock()
		if ok && s.b.ready.Load() {
			return s.b
		}
	}
	var best *backend
	for _, be := range lb.backends {
		if be.ready.Load() && (best == nil || be.active.Load() < best.active.Load()) {
			best = be
		}
	}
	return best
}

// learn remembers which gateway opened an Engine.IO session: a handshake's
// answer is the open packet, 0{"sid":"…",…}, first in a polling response.
func (lb *balancer) learn(be *backend, resp *http.Response) error {
	q := resp.Request.URL.Query()
	if resp.StatusCode != http.StatusOK || q.Get("sid") != "" || q.Get("transport") != "polling" {
		return nil
	}
	// The open packet comes first and is short: read a little, and hand on
	// what was read followed by the rest.
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
	first, _, _ := bytes.Cut(body, []byte{0x1e}) // packets are separated by a record separator
	var open struct {
		SID string `json:"sid"`
	}
	if !bytes.HasPrefix(first, []byte("0")) || json.Unmarshal(first[1:], &open) != nil || !validSID(open.SID) {
		return nil
	}
	lb.mu.Lock()
	lb.sessions[open.SID] = session{be, time.Now()}
	lb.mu.Unlock()
	return nil
}

// validSID: what gateways issue (base64url), and bounded: anything else is
// not remembered.
func validSID(sid string) bool {
	if sid == "" || len(sid) > 64 {
		return false
	}
	for _, c := range []byte(sid) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// check runs checkOnce every interval until ctx ends.
func (lb *balancer) check(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		lb.checkOnce()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkOnce asks every gateway's /readyz and forgets sessions unused for
// sessionTTL.
func (lb *balancer) checkOnce() {
	for _, be := range lb.backends {
		resp, err := lb.client.Get("http://" + be.host + "/readyz")
		ready := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			resp.Body.Close()
		}
		if be.ready.Swap(ready) != ready {
			log.Printf("gateway %s ready=%v", be.host, ready)
		}
	}
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for sid, s := range lb.sessions {
		if time.Since(s.seen) > sessionTTL {
			delete(lb.sessions, sid)
		}
	}
}
