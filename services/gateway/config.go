package gateway

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/flagenv"
)

// Config configures a gateway. Zero values mean the documented defaults.
type Config struct {
	// HTTPAddr is where sockets, /healthz, /readyz and /metrics are served.
	// Default 127.0.0.1:8080 ($ROOMCAST_HTTP_ADDR).
	HTTPAddr string
	// Listener, when set, is used instead of listening on HTTPAddr (tests).
	Listener net.Listener

	// NATSURL is the NATS server to connect to ($ROOMCAST_NATS_URL).
	NATSURL string
	// NATSOptions are extra connection options (programmatic only).
	NATSOptions []nats.Option
	// Store names the subjects, stream and buckets (prefix $ROOMCAST_SUBJECT_PREFIX).
	Store proto.StoreConfig

	// JWTSecret is the HS256 secret tokens are signed with ($ROOMCAST_JWT_SECRET).
	JWTSecret string
	// JWTPublicKeyFile is a PEM file with an Ed25519 or RSA public key
	// ($ROOMCAST_JWT_PUBLIC_KEY). One of JWTSecret and JWTPublicKeyFile is required.
	JWTPublicKeyFile string

	// AllowedOrigins are the Origin headers a browser may connect from,
	// comma-separated in $ROOMCAST_ALLOWED_ORIGINS; "*" allows any. Requests
	// without an Origin header (non-browser clients) are always allowed.
	// Default: none, so only non-browser clients connect.
	AllowedOrigins []string

	// ReadyChecks are extra conditions of /readyz (the all-in-one program adds
	// its embedded server and stream checks). Each returns nil when ready.
	ReadyChecks map[string]func() error

	// Logger receives the gateway's logs.
	Logger zerolog.Logger
	// Registry receives the gateway's metrics and is served on /metrics; nil
	// means a new registry.
	Registry *prometheus.Registry
}

// Bind registers the gateway's own flags; the common ones are in flagenv.Common.
func (c *Config) Bind(s *flagenv.Set) {
	s.String(&c.HTTPAddr, "http-addr", "ROOMCAST_HTTP_ADDR", "127.0.0.1:8080", "gateway listen address")
	s.String(&c.JWTSecret, "jwt-secret", "ROOMCAST_JWT_SECRET", "", "HS256 secret for tokens")
	s.String(&c.JWTPublicKeyFile, "jwt-public-key", "ROOMCAST_JWT_PUBLIC_KEY", "", "PEM file with an Ed25519 or RSA public key for tokens")
	s.Func("allowed-origins", "comma-separated Origin allow-list, * for any ($ROOMCAST_ALLOWED_ORIGINS)", func(v string) error {
		c.AllowedOrigins = splitList(v)
		return nil
	})
	if v, ok := os.LookupEnv("ROOMCAST_ALLOWED_ORIGINS"); ok {
		c.AllowedOrigins = splitList(v)
	}
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (c Config) withDefaults() Config {
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8080"
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return c
}

// Validate checks what can be checked without the network: the NATS URL and
// the token key. Each error names the setting to fix.
func (c Config) Validate() error {
	if err := flagenv.CheckNATSURL(c.NATSURL); err != nil {
		return err
	}
	if c.JWTSecret == "" && c.JWTPublicKeyFile == "" {
		return fmt.Errorf("ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY: one is required to check tokens")
	}
	if c.JWTSecret != "" && c.JWTPublicKeyFile != "" {
		return fmt.Errorf("ROOMCAST_JWT_SECRET and ROOMCAST_JWT_PUBLIC_KEY: set one, not both")
	}
	if c.JWTPublicKeyFile != "" {
		if _, err := os.ReadFile(c.JWTPublicKeyFile); err != nil {
			return fmt.Errorf("ROOMCAST_JWT_PUBLIC_KEY: %v", err)
		}
	}
	return nil
}
