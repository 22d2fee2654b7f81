package roomstate

import (
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/flagenv"
)

// Config configures the service. Zero values mean the documented defaults.
type Config struct {
	// NATSURL is the NATS server to connect to ($ROOMCAST_NATS_URL).
	NATSURL string
	// NATSOptions are extra connection options (programmatic only).
	NATSOptions []nats.Option
	// Store names the subjects, stream and buckets.
	Store proto.StoreConfig

	// HTTPAddr serves /healthz, /readyz and /metrics when the service runs on
	// its own; empty (the all-in-one program) serves nothing.
	HTTPAddr string

	// Logger receives the service's logs.
	Logger zerolog.Logger
	// Registry receives the service's metrics; nil means a new registry.
	Registry *prometheus.Registry
}

// Bind registers the service's own flags; the common ones are in flagenv.Common.
func (c *Config) Bind(s *flagenv.Set) {
	s.String(&c.HTTPAddr, "http-addr", "ROOMCAST_ROOMSTATE_HTTP_ADDR", "127.0.0.1:8081", "address of /healthz, /readyz and /metrics; empty for none")
}

// Validate checks what can be checked without the network.
func (c Config) Validate() error {
	return flagenv.CheckNATSURL(c.NATSURL)
}
