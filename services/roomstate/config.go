package roomstate

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/proto"
)

// Defaults of Config.
const (
	DefaultDurable   = "roomstate"
	DefaultBatchSize = 1000
	DefaultBatchWait = 2 * time.Millisecond
	DefaultAckWait   = 30 * time.Second
)

// Config configures the service. Zero values mean the documented defaults.
type Config struct {
	// NATSURL is the NATS server to connect to ($ROOMCAST_NATS_URL).
	NATSURL string
	// NATSOptions are extra connection options (programmatic only).
	NATSOptions []nats.Option
	// Store names the subjects, stream and buckets.
	Store proto.StoreConfig
	// SkipEnsure leaves stream ROOMS and bucket ROOM_STATE alone at start;
	// by default Run creates or updates them to Store (proto.Ensure), which
	// is idempotent, so any replica may start first. Set it when an operator
	// manages the stream and buckets and the service's user may not.
	SkipEnsure bool

	// Durable is the name of the durable pull consumer on stream ROOMS that
	// every replica shares ($ROOMCAST_ROOMSTATE_DURABLE). Default "roomstate".
	Durable string
	// BatchSize is the most messages collapsed into one round of KV writes,
	// and the consumer's pull size. Default 1000.
	BatchSize int
	// BatchWait is how long a round waits for more messages after its first
	// before writing: the floor of the lag under a steady trickle, and what
	// lets a burst to one room become a handful of writes. Default 2ms.
	BatchWait time.Duration
	// AckWait is how long the server waits for a message's ack before it
	// redelivers it (to this or another replica). Default 30s.
	AckWait time.Duration

	// HTTPAddr serves /healthz, /readyz and /metrics when the service runs on
	// its own; empty (the all-in-one program) serves nothing.
	HTTPAddr string

	// Logger receives the service's logs.
	Logger zerolog.Logger
	// Registry receives the service's metrics; nil means a new registry.
	Registry *prometheus.Registry

	// panicHook, in tests only, is called at each panic boundary with its
	// name (loop: a batch in hand, before it is folded; fold: a message
	// parsed, not yet folded; write: a room's batch before its KV write;
	// get, getmany: before the read), so a test can panic there.
	panicHook func(where string)
}

// Bind registers the service's own flags; the common ones are in flagenv.Common.
func (c *Config) Bind(s *flagenv.Set) {
	s.String(&c.HTTPAddr, "http-addr", "ROOMCAST_ROOMSTATE_HTTP_ADDR", "127.0.0.1:8081", "address of /healthz, /readyz and /metrics; empty for none")
	s.Bool(&c.SkipEnsure, "skip-ensure", "ROOMCAST_SKIP_ENSURE", false, "leave stream ROOMS and bucket ROOM_STATE alone at start (their creation is the admin's)")
	s.String(&c.Durable, "durable", "ROOMCAST_ROOMSTATE_DURABLE", DefaultDurable, "durable consumer name on stream ROOMS, shared by all replicas")
	s.Duration(&c.BatchWait, "batch-wait", "ROOMCAST_ROOMSTATE_BATCH_WAIT", DefaultBatchWait, "how long a batch waits for more messages before writing")
}

// Validate checks what can be checked without the network.
func (c Config) Validate() error {
	if err := flagenv.CheckNATSURL(c.NATSURL); err != nil {
		return err
	}
	switch {
	case c.BatchSize < 0:
		return fmt.Errorf("roomstate: BatchSize %d: want 0 (default %d) or more", c.BatchSize, DefaultBatchSize)
	case c.BatchWait < 0:
		return fmt.Errorf("roomstate: BatchWait %s: want 0 (default %s) or more", c.BatchWait, DefaultBatchWait)
	case c.AckWait < 0:
		return fmt.Errorf("roomstate: AckWait %s: want 0 (default %s) or more", c.AckWait, DefaultAckWait)
	}
	for i := 0; i < len(c.Durable); i++ {
		if b := c.Durable[i]; b == '.' || b == '*' || b == '>' || b <= ' ' {
			return fmt.Errorf("ROOMCAST_ROOMSTATE_DURABLE=%q: no dots, wildcards or spaces", c.Durable)
		}
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Durable == "" {
		c.Durable = DefaultDurable
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchWait == 0 {
		c.BatchWait = DefaultBatchWait
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return c
}
