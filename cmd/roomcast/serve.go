package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway"
	"github.com/roomcast/roomcast/services/roomstate"
	"github.com/roomcast/roomcast/services/sync/backfill"
)

// serveConfig is what `roomcast serve` reads from flags and ROOMCAST_*.
type serveConfig struct {
	common  flagenv.Common
	gateway gateway.Config
	// natsAddr is the embedded server's client address (ROOMCAST_NATS_ADDR),
	// used when common.NATSURL is empty.
	natsAddr string
	// dataDir holds the embedded server's JetStream store (ROOMCAST_DATA_DIR).
	dataDir string
	// natsConfig is a nats-server configuration file for the embedded server
	// (ROOMCAST_NATS_CONFIG): where it listens, what it stores, who may
	// connect. Without one it listens on natsAddr, which must be loopback:
	// it has no authorization.
	natsConfig string
	// roomstate and sync read their own services' ROOMCAST_ROOMSTATE_* and
	// ROOMCAST_SYNC_* variables (their flags are bin/roomstate's and
	// bin/sync's); their metrics are served with the gateway's.
	roomstate roomstate.Config
	sync      backfill.Config
	// authzOptionalSet and originsSet say whether ROOMCAST_AUTHZ_OPTIONAL
	// and ROOMCAST_ALLOWED_ORIGINS were given (flag or environment):
	// development mode's defaults apply only to what was not.
	authzOptionalSet, originsSet bool
}

// serveCommand: roomcast serve.
func serveCommand(out io.Writer) *cobra.Command {
	var c serveConfig
	fs := flagenv.New(flag.NewFlagSet("serve", flag.ContinueOnError))
	c.common.Bind(fs, "")
	c.gateway.Bind(fs)
	fs.String(&c.natsAddr, "nats-addr", "ROOMCAST_NATS_ADDR", "127.0.0.1:4222", "embedded NATS client address (when no NATS URL is given)")
	bindDataDir(fs, &c.dataDir)
	fs.String(&c.natsConfig, "nats-config", "ROOMCAST_NATS_CONFIG", "", "nats-server config file for the embedded NATS, with authorization (needed to listen beyond loopback; e.g. deploy/nats/single.conf)")
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "an embedded NATS with JetStream and every roomcast service, in one process",
		Long: `serve runs an embedded nats-server with JetStream (or connects to --nats-url)
and the gateway, roomstate and sync services in one process.

With no --jwt-secret and no --jwt-public-key it is in development mode: it
generates a secret (kept in --data-dir, so "roomcast token USER" can sign with
it), prints a token for user "dev", and says what else it allows.

The roomstate and sync services read their own ROOMCAST_ROOMSTATE_* and
ROOMCAST_SYNC_* variables (see bin/roomstate -h and bin/sync -h).`,
		Example: `  roomcast serve
  ROOMCAST_JWT_SECRET=... roomcast serve --http-addr 0.0.0.0:8080`,
		Args: usageArgs("no arguments", cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Parse(nil) parses nothing: it reports the first bad ROOMCAST_* value.
			if err := fs.Parse(nil); err != nil {
				return usageError{err}
			}
			if err := c.readServices(); err != nil {
				return err
			}
			given := func(flag, env string) bool {
				_, inEnv := os.LookupEnv(env)
				return inEnv || cmd.Flags().Changed(flag)
			}
			c.authzOptionalSet = given("authz-optional", "ROOMCAST_AUTHZ_OPTIONAL")
			c.originsSet = given("allowed-origins", "ROOMCAST_ALLOWED_ORIGINS")
			return serve(cmd.Context(), c, out)
		},
	}
	cmd.Flags().AddGoFlagSet(fs.FlagSet)
	return cmd
}

// readServices reads the roomstate and sync services' variables.
func (c *serveConfig) readServices() error {
	for _, bind := range []func(*flagenv.Set){c.roomstate.Bind, c.sync.Bind} {
		env := flagenv.New(flag.NewFlagSet("serve", flag.ContinueOnError))
		bind(env)
		if err := env.Parse(nil); err != nil {
			return err
		}
	}
	c.roomstate.HTTPAddr, c.sync.HTTPAddr = "", ""
	return nil
}

// check validates everything that can be checked before anything starts,
// naming the setting to fix.
func (c serveConfig) check() error {
	if c.common.NATSURL == "" {
		o, err := c.embeddedOptions()
		if err != nil {
			return err
		}
		if err := checkWritableDir(o.StoreDir); err != nil {
			if c.natsConfig != "" {
				return fmt.Errorf("ROOMCAST_NATS_CONFIG=%s: store_dir %q: %v", c.natsConfig, o.StoreDir, err)
			}
			return fmt.Errorf("ROOMCAST_DATA_DIR=%q: %v", c.dataDir, err)
		}
		if _, err := c.rolePasswords(o); err != nil {
			return err
		}
	} else if err := flagenv.CheckNATSURL(c.common.NATSURL); err != nil {
		return err
	}
	rs, bf := c.roomstate, c.sync
	rs.NATSURL, bf.NATSURL = "nats://127.0.0.1:4222", "nats://127.0.0.1:4222" // checked above
	if err := rs.Validate(); err != nil {
		return fmt.Errorf("ROOMCAST_ROOMSTATE_*: %w", err)
	}
	if err := bf.Validate(); err != nil {
		return fmt.Errorf("ROOMCAST_SYNC_*: %w", err)
	}
	if c.gateway.JWTSecret == "" && c.gateway.JWTPublicKeyFile == "" {
		return nil // a development secret is generated
	}
	g := c.gateway
	g.NATSURL = "nats://127.0.0.1:4222" // checked above
	return g.Validate()
}

// embeddedOptions are the embedded server's options: the file of
// ROOMCAST_NATS_CONFIG, or JetStream on ROOMCAST_NATS_ADDR with no
// authorization. A server without authorization is refused on any address
// but loopback: whoever reached it could publish and read everything.
func (c serveConfig) embeddedOptions() (*server.Options, error) {
	var o *server.Options
	if c.natsConfig != "" {
		var err error
		if o, err = server.ProcessConfigFile(c.natsConfig); err != nil {
			return nil, fmt.Errorf("ROOMCAST_NATS_CONFIG=%s: %v", c.natsConfig, err)
		}
		if !o.JetStream {
			return nil, fmt.Errorf("ROOMCAST_NATS_CONFIG=%s: roomcast needs JetStream: add a jetstream block", c.natsConfig)
		}
		if o.StoreDir == "" {
			o.StoreDir = filepath.Join(c.dataDir, "jetstream")
		}
		if o.ServerName == "" {
			o.ServerName = "roomcast-embedded"
		}
		if !isLoopback(o.Host) && !hasAuthorization(o) {
			return nil, fmt.Errorf("ROOMCAST_NATS_CONFIG=%s: listens on %q with no authorization: add accounts and users (deploy/nats/accounts.conf) or listen on 127.0.0.1", c.natsConfig, o.Host)
		}
	} else {
		host, portStr, err := net.SplitHostPort(c.natsAddr)
		if err != nil {
			return nil, fmt.Errorf("ROOMCAST_NATS_ADDR=%q: want host:port", c.natsAddr)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 || host == "" {
			return nil, fmt.Errorf("ROOMCAST_NATS_ADDR=%q: want host:port with a port from 0 to 65535", c.natsAddr)
		}
		if !isLoopback(host) {
			return nil, fmt.Errorf("ROOMCAST_NATS_ADDR=%s: the embedded NATS has no authorization, so it listens on loopback only: "+
				"give ROOMCAST_NATS_CONFIG a nats-server config with the roles (deploy/nats/single.conf) to listen on %s", c.natsAddr, host)
		}
		if port == 0 {
			port = -1 // 0 would mean nats-server's default, 4222
		}
		o = &server.Options{
			ServerName: "roomcast-embedded",
			Host:       host,
			Port:       port,
			JetStream:  true,
			StoreDir:   filepath.Join(c.dataDir, "jetstream"),
		}
	}
	o.NoSigs, o.NoLog = true, true
	return o, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hasAuthorization says whether a client must present something to connect.
func hasAuthorization(o *server.Options) bool {
	return len(o.Users) > 0 || len(o.Nkeys) > 0 || o.Username != "" || o.Authorization != "" ||
		len(o.TrustedOperators) > 0 || len(o.TrustedKeys) > 0 || o.AuthCallout != nil
}

// embeddedRoles are the roles serve's own connections take on an embedded
// server with authorization: the users of deploy/nats/accounts.conf, whose
// passwords nats-server reads from the same variables.
var embeddedRoles = []string{"admin", "gateway", "roomstate", "sync"}

// rolePasswords are the passwords of embeddedRoles from
// ROOMCAST_<ROLE>_PASSWORD, nil when the server has no authorization.
func (c serveConfig) rolePasswords(o *server.Options) (map[string]string, error) {
	if !hasAuthorization(o) {
		return nil, nil
	}
	pw := map[string]string{}
	var missing []string
	for _, r := range embeddedRoles {
		v := "ROOMCAST_" + strings.ToUpper(r) + "_PASSWORD"
		if pw[r] = os.Getenv(v); pw[r] == "" {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("ROOMCAST_NATS_CONFIG=%s has authorization: serve connects as the roles %s and needs %s",
			c.natsConfig, strings.Join(embeddedRoles, ", "), strings.Join(missing, ", "))
	}
	return pw, nil
}

func checkWritableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".roomcast-write-check-*")
	if err != nil {
		return fmt.Errorf("not writable: %v", err)
	}
	f.Close()
	return os.Remove(f.Name())
}

func serve(ctx context.Context, c serveConfig, out io.Writer) error {
	flagenv.GCPercent(flagenv.GatewayGCPercent)
	if err := c.check(); err != nil {
		return err
	}
	store, err := c.common.Store()
	if err != nil {
		return err
	}
	log, err := c.common.Logger(os.Stderr)
	if err != nil {
		return err
	}

	var devToken string
	if c.gateway.JWTSecret == "" && c.gateway.JWTPublicKeyFile == "" {
		// Development mode (docs/decisions.md): no identity provider, no
		// authorizer, pages on this machine. A configured secret or key
		// turns all of it off unless set explicitly.
		c.gateway.JWTSecret, devToken, err = devSecret(c.dataDir)
		if err != nil {
			return err
		}
		if !c.authzOptionalSet {
			c.gateway.AuthzOptional = true
		}
		if !c.originsSet {
			c.gateway.AllowedOrigins = gateway.DevOrigins
		}
	}

	natsURL := c.common.NATSURL
	var ns *server.Server
	var passwords map[string]string // by role; nil: no authorization
	if natsURL == "" {
		o, err := c.embeddedOptions()
		if err != nil {
			return err
		}
		if passwords, err = c.rolePasswords(o); err != nil {
			return err
		}
		ns, err = startEmbedded(o)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			log.Info().Msg("embedded NATS stopped")
		}()
		natsURL = ns.ClientURL()
		log.Info().Str("url", natsURL).Str("store", o.StoreDir).Str("config", c.natsConfig).Msg("embedded NATS started")
		embeddedStarted(ns)
	}

	// With the embedded server, every service's connection is in-process:
	// no loopback TCP, no system call per message between them.
	var natsOpts []nats.Option
	if ns != nil {
		natsOpts = append(natsOpts, nats.InProcessServer(ns))
	}
	// as is a service's options: on an embedded server with authorization,
	// each connects as its own role.
	as := func(role string) []nats.Option {
		if passwords == nil {
			return natsOpts
		}
		return append(slices.Clip(natsOpts), nats.UserInfo(role, passwords[role]))
	}
	nc, err := nats.Connect(natsURL, append([]nats.Option{nats.Name("roomcast-serve"), nats.MaxReconnects(-1)}, as("admin")...)...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = proto.Ensure(ectx, js, store)
	cancel()
	if err != nil {
		return err
	}
	log.Info().Str("stream", proto.StreamRooms).Msg("stream and buckets ensured")

	registry := prometheus.NewRegistry()
	gw := c.gateway
	gw.NATSURL, gw.Store, gw.Logger, gw.Registry = natsURL, store, log, registry
	gw.RecoveryTTL = c.common.RecoveryTTL
	gw.NATSOptions = as("gateway")
	gw.ReadyChecks = map[string]func() error{"stream": func() error { return streamReady(js) }}
	rs, bf := c.roomstate, c.sync
	rs.NATSURL, rs.NATSOptions, rs.Store, rs.Logger, rs.Registry = natsURL, as("roomstate"), store, log, registry
	bf.NATSURL, bf.NATSOptions, bf.Store, bf.Logger, bf.Registry = natsURL, as("sync"), store, log, registry
	rs.SkipEnsure = true // ensured above, as admin

	ln, err := gateway.Listen(ctx, gw.HTTPAddr)
	if err != nil {
		return fmt.Errorf("ROOMCAST_HTTP_ADDR=%s: %w", gw.HTTPAddr, err)
	}
	gw.Listener = ln
	printBanner(out, banner{httpAddr: ln.Addr().String(), natsURL: natsURL, devToken: devToken,
		devSecretPath: filepath.Join(c.dataDir, devSecretFile), gateway: gw})

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return gateway.Run(gctx, gw) })
	g.Go(func() error { return roomstate.Run(gctx, rs) })
	g.Go(func() error { return backfill.Run(gctx, bf) })
	err = g.Wait()
	nc.Close()
	if err == nil || errors.Is(err, context.Canceled) {
		log.Info().Msg("roomcast stopped")
		return nil
	}
	return err
}

// embeddedStarted is called with the embedded server once it is up (tests).
var embeddedStarted = func(*server.Server) {}

// streamReady is a readiness check: stream ROOMS answers.
func streamReady(js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := js.Stream(ctx, proto.StreamRooms)
	return err
}

// startEmbedded starts nats-server with JetStream in this process.
func startEmbedded(o *server.Options) (*server.Server, error) {
	s, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s:%d did not start listening within 10s (is the port taken?)", o.Host, o.Port)
	}
	return s, nil
}

// bindDataDir binds serve's data directory, which "roomcast token" reads too.
func bindDataDir(fs *flagenv.Set, dir *string) {
	fs.String(dir, "data-dir", "ROOMCAST_DATA_DIR", "./data", "embedded NATS JetStream store, and the development secret")
}

// devSecretFile is where serve keeps the secret it generates, in its data
// directory: "roomcast token" signs with it, and a restart keeps the
// tokens a developer has pasted into pages valid.
const devSecretFile = "dev-jwt-secret"

// devSecret reads the development secret from dataDir, making one the first
// time, and makes a token for user "dev", for trying roomcast without an
// identity provider.
func devSecret(dataDir string) (secret, token string, err error) {
	secret, err = readDevSecret(dataDir)
	if errors.Is(err, os.ErrNotExist) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", "", err
		}
		secret = hex.EncodeToString(b)
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			return "", "", fmt.Errorf("ROOMCAST_DATA_DIR=%q: %v", dataDir, err)
		}
		if err := os.WriteFile(filepath.Join(dataDir, devSecretFile), []byte(secret+"\n"), 0o600); err != nil {
			return "", "", fmt.Errorf("ROOMCAST_DATA_DIR=%q: keep the development secret: %v", dataDir, err)
		}
	} else if err != nil {
		return "", "", err
	}
	token, err = signToken(secret, "dev", 24*time.Hour)
	return secret, token, err
}

// readDevSecret reads the development secret serve keeps in dataDir.
func readDevSecret(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, devSecretFile))
	if err != nil {
		return "", err
	}
	secret := strings.TrimSpace(string(b))
	if len(secret) < 32 {
		return "", fmt.Errorf("%s: too short to be a secret serve wrote; remove it and serve makes a new one", filepath.Join(dataDir, devSecretFile))
	}
	return secret, nil
}

// signToken is an HS256 token for user, valid for ttl.
func signToken(secret, user string, ttl time.Duration) (string, error) {
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
	}).SignedString([]byte(secret))
}

// banner is what serve prints on stdout once it listens.
type banner struct {
	httpAddr, natsURL       string
	devToken, devSecretPath string // development mode only
	gateway                 gateway.Config
}

// printBanner says where everything is and, in development mode, what it
// allows and the one setting that turns each allowance off.
func printBanner(w io.Writer, b banner) {
	fmt.Fprintf(w, "roomcast is starting\n")
	fmt.Fprintf(w, "  sockets  ws://%s/socket.io/?EIO=4&transport=websocket\n", b.httpAddr)
	fmt.Fprintf(w, "  health   http://%s/healthz  http://%s/readyz  http://%s/metrics\n", b.httpAddr, b.httpAddr, b.httpAddr)
	fmt.Fprintf(w, "  nats     %s  (stream %s, buckets %s and %s)\n", b.natsURL, proto.StreamRooms, proto.BucketRoomState, proto.BucketPresence)
	if b.devToken != "" {
		fmt.Fprintf(w, "development mode (no ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY given):\n")
		fmt.Fprintf(w, "  secret   kept in %s; \"roomcast token USER\" signs a token with it\n", b.devSecretPath)
	}
	if b.gateway.AuthzOptional {
		fmt.Fprintf(w, "  joins    org and board rooms may be joined while no service answers %s (ROOMCAST_AUTHZ_OPTIONAL=false refuses them)\n", proto.SubjectAuthzJoin)
	}
	if len(b.gateway.AllowedOrigins) > 0 {
		fmt.Fprintf(w, "  origins  browser pages from %s may connect (ROOMCAST_ALLOWED_ORIGINS= allows none)\n", strings.Join(b.gateway.AllowedOrigins, " "))
	}
	if b.devToken != "" {
		fmt.Fprintf(w, "  token    for user \"dev\", valid 24h:\n%s\n", b.devToken)
	}
}
