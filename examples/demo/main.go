// Command demo runs roomcast with a small domain service around it: the
// whole stack in one process (embedded NATS with JetStream, the gateway,
// roomstate and sync), a demo task-and-chat service that answers
// authz.join for its users, publishes every change with proto's publisher
// and consumes the board's rooms from the stream (so tasks published by
// others, such as "roomcast publish", are its data too), and a one-page
// board that uses the TypeScript client (clients/js) in the browser:
// columns with drag and drop, the sprint strip, who is active, a chat, and
// a disconnected / catching up / live indicator. `make demo` runs it; open
// the printed URL.
//
// It is a demo, not a product: tasks live in memory (and so does the
// stream, in a temporary directory), and anybody may take a demo user's
// token from /api/token.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway"
	"github.com/roomcast/roomcast/services/roomstate"
	"github.com/roomcast/roomcast/services/sync/backfill"
)

type config struct {
	addr         string // the page and the demo API
	gatewayAddr  string // sockets
	clientDir    string // clients/js, built (dist/) with its node_modules
	secret       string
	pingInterval time.Duration
	pingTimeout  time.Duration
	board        string
	users        []string
	logLevel     string
	natsURL      string // a deployed roomcast's NATS: run only the domain service
	gatewayURL   string // with natsURL: the sockets' public URL, for the page
}

func main() {
	var c config
	var users string
	flag.StringVar(&c.addr, "addr", env("DEMO_ADDR", "127.0.0.1:8090"), "the page and the demo API ($DEMO_ADDR)")
	flag.StringVar(&c.gatewayAddr, "gateway-addr", env("DEMO_GATEWAY_ADDR", "127.0.0.1:8091"), "the gateway's sockets ($DEMO_GATEWAY_ADDR)")
	flag.StringVar(&c.clientDir, "client-dir", env("DEMO_CLIENT_DIR", ""), "clients/js with dist/ built and node_modules installed (default: found from the working directory)")
	flag.StringVar(&c.secret, "jwt-secret", env("ROOMCAST_JWT_SECRET", ""), "HS256 secret (default: generated for this run)")
	flag.DurationVar(&c.pingInterval, "ping-interval", 5*time.Second, "the gateway's ping interval: with the timeout, how soon a page that lost its network notices")
	flag.DurationVar(&c.pingTimeout, "ping-timeout", 5*time.Second, "the gateway's ping timeout")
	flag.StringVar(&c.board, "board", "demo", "the board the page shows")
	flag.StringVar(&users, "users", "alice,bob,carol", "demo users, comma-separated")
	flag.StringVar(&c.logLevel, "log-level", env("ROOMCAST_LOG_LEVEL", "warn"), "log level")
	flag.StringVar(&c.natsURL, "nats-url", env("ROOMCAST_NATS_URL", ""), "run only the domain service (authz.join, the API, the page) against a deployed roomcast's NATS, as role service ($ROOMCAST_NATS_URL)")
	flag.StringVar(&c.gatewayURL, "gateway-url", env("DEMO_GATEWAY_URL", "http://127.0.0.1:8080"), "with -nats-url: the gateways' public URL, for the page ($DEMO_GATEWAY_URL)")
	flag.Parse()
	c.users = strings.Split(users, ",")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func env(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

func run(ctx context.Context, c config) error {
	if err := proto.ValidateID(c.board); err != nil {
		return fmt.Errorf("-board: %w", err)
	}
	for _, u := range c.users {
		if err := proto.ValidateID(u); err != nil {
			return fmt.Errorf("-users: %w", err)
		}
	}
	if c.natsURL != "" {
		return runService(ctx, c)
	}
	clientDir, err := findClientDir(c.clientDir)
	if err != nil {
		return err
	}
	if c.secret == "" {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		c.secret = hex.EncodeToString(b)
	}
	level, err := zerolog.ParseLevel(c.logLevel)
	if err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()

	// Listen first, so the gateway's allowed origin is the page's real one.
	pageLn, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("-addr %s: %w", c.addr, err)
	}
	gwLn, err := net.Listen("tcp", c.gatewayAddr)
	if err != nil {
		pageLn.Close()
		return fmt.Errorf("-gateway-addr %s: %w", c.gatewayAddr, err)
	}
	pageURL := "http://" + pageLn.Addr().String()
	gatewayURL := "http://" + gwLn.Addr().String()

	// The stream lives as long as the in-memory tasks do.
	dataDir, err := os.MkdirTemp("", "roomcast-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	ns, err := server.NewServer(&server.Options{
		ServerName: "roomcast-demo", Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: filepath.Join(dataDir, "jetstream"), NoSigs: true, NoLog: true,
	})
	if err != nil {
		return err
	}
	go ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("embedded NATS did not start")
	}
	natsURL := ns.ClientURL()

	nc, err := nats.Connect(natsURL, nats.Name("roomcast-demo"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store := proto.StoreConfig{}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = proto.Ensure(ectx, js, store)
	cancel()
	if err != nil {
		return err
	}

	d := newDomain(c, proto.NewPublisher(js, proto.Subjects{}), log)
	authz, err := d.serveAuthz(nc)
	if err != nil {
		return err
	}
	defer authz.Unsubscribe()
	d.presence = func(ctx context.Context, users []string) (map[string]bool, error) {
		var res proto.PresenceResult
		err := proto.Request(ctx, nc, proto.SubjectPresenceGet, proto.PresenceArgs{UserIDs: users}, &res)
		return res.Active, err
	}

	registry := prometheus.NewRegistry()
	gw := gateway.Config{
		Listener:       gwLn,
		NATSURL:        natsURL,
		Store:          store,
		JWTSecret:      c.secret,
		AllowedOrigins: []string{pageURL, strings.Replace(pageURL, "127.0.0.1", "localhost", 1)},
		PingInterval:   c.pingInterval,
		PingTimeout:    c.pingTimeout,
		DrainGrace:     500 * time.Millisecond,
		Logger:         log,
		Registry:       registry,
	}
	page := &http.Server{Handler: d.routes(gatewayURL, clientDir), ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return gateway.Run(gctx, gw) })
	g.Go(func() error {
		return roomstate.Run(gctx, roomstate.Config{NATSURL: natsURL, Store: store, Logger: log, Registry: registry})
	})
	g.Go(func() error {
		return backfill.Run(gctx, backfill.Config{NATSURL: natsURL, Store: store, Logger: log, Registry: registry})
	})
	g.Go(func() error { return d.consume(gctx, js, store.Subjects) })
	g.Go(func() error {
		sctx, cancel := context.WithTimeout(gctx, 10*time.Second)
		defer cancel()
		return d.seed(sctx)
	})
	g.Go(func() error {
		if err := page.Serve(pageLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return page.Shutdown(sctx)
	})
	fmt.Printf("roomcast demo\n  board    %s/?user=%s  (and ?user=%s in another window)\n  sockets  %s\n  nats     %s\n"+
		"  publish  bin/roomcast publish board-%s-tasks create-task t-cli --data '{\"title\":\"From the terminal\",\"status\":\"todo\"}' --nats-url %s\n",
		pageURL, c.users[0], c.users[min(1, len(c.users)-1)], gatewayURL, natsURL, c.board, natsURL)
	err = g.Wait()
	if err == nil || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// runService is the demo domain service alone, for a deployed roomcast (the
// compose stack): it answers authz.join and serves the API and the page;
// the gateways, roomstate, sync and NATS run elsewhere. Tokens it mints
// must be the gateways', so the secret is required.
func runService(ctx context.Context, c config) error {
	if c.secret == "" {
		return errors.New("-nats-url needs ROOMCAST_JWT_SECRET, the gateways' secret")
	}
	level, err := zerolog.ParseLevel(c.logLevel)
	if err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := zerolog.New(os.Stderr).Level(level).With().Timestamp().Logger()
	clientDir, err := findClientDir(c.clientDir)
	if err != nil {
		log.Warn().Err(err).Msg("the board page will not load; authz.join and the API work")
	}
	nc, err := nats.Connect(c.natsURL, nats.Name("roomcast-demo"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("-nats-url: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	d := newDomain(c, proto.NewPublisher(js, proto.Subjects{}), log)
	authz, err := d.serveAuthz(nc)
	if err != nil {
		return err
	}
	defer authz.Unsubscribe()
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("-addr %s: %w", c.addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", d.routes(c.gatewayURL, clientDir))
	// Ready while connected to NATS: authz.join is answered.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !nc.IsConnected() {
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	page := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = page.Shutdown(sctx)
	}()
	log.Info().Str("addr", ln.Addr().String()).Str("nats", nc.ConnectedUrlRedacted()).Msg("demo domain service started")
	serviceListening(ln.Addr())
	if err := page.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// serviceListening is called with runService's address once it listens (tests).
var serviceListening = func(net.Addr) {}

// findClientDir locates clients/js: the flag, or clients/js under the
// working directory or one of its parents (make demo runs at the root).
func findClientDir(flagValue string) (string, error) {
	candidates := []string{flagValue}
	if flagValue == "" {
		wd, _ := os.Getwd()
		for dir := wd; ; dir = filepath.Dir(dir) {
			candidates = append(candidates, filepath.Join(dir, "clients", "js"))
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	for _, dir := range candidates {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "dist", "index.js")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("clients/js/dist/index.js not found: build the client first (cd clients/js && npm ci && npm run build), or pass -client-dir")
}
