package backfill

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/proto"
)

// Defaults of Config. They are documented in docs/sync.md.
const (
	// DefaultSkewMargin is how far before `since` a timestamp read starts:
	// publishers' clocks may run ahead of the NATS server's store clock.
	DefaultSkewMargin = 5 * time.Minute
	// DefaultLimit is the page size when a request gives no limit.
	DefaultLimit = 100
	// DefaultMaxLimit caps a request's limit (larger ones are clamped).
	DefaultMaxLimit = 1000
	// DefaultMaxScan caps the stream messages one request reads.
	DefaultMaxScan = 10_000
	// DefaultMaxBytes caps the stream bytes one request reads.
	DefaultMaxBytes = 4 << 20
	// DefaultMaxTime caps the time one request spends reading.
	DefaultMaxTime = 2 * time.Second
	// DefaultConcurrency is how many requests one instance serves at once.
	DefaultConcurrency = 16
	// DefaultUserQueue is how many of one user's requests may wait for a
	// slot.
	DefaultUserQueue = 8
	// DefaultQueueWait is how long a request may wait for a slot before it
	// is refused (rate_limited) rather than read.
	DefaultQueueWait = 500 * time.Millisecond
	// DefaultIndexDepth is how many of a room's latest messages the index
	// keeps (24 bytes each).
	DefaultIndexDepth = 256
	// DefaultIndexRooms is how many rooms the index keeps.
	DefaultIndexRooms = 4096
	// DefaultTailMessages is how many of a room's latest messages' bodies
	// the tail keeps (at most IndexDepth).
	DefaultTailMessages = 128
	// DefaultTailBytes bounds the tail's memory over all rooms.
	DefaultTailBytes = 64 << 20
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

	// SkewMargin is subtracted from `since` before the stream is searched by
	// store time, so a publisher whose clock runs ahead of the NATS server by
	// up to this much still has its changes found. Default 5 minutes
	// ($ROOMCAST_SYNC_SKEW_MARGIN).
	SkewMargin time.Duration
	// DefaultLimit is the page size of a request without limit. Default 100.
	DefaultLimit int
	// MaxLimit caps a request's limit; a larger one is clamped. Default 1000.
	MaxLimit int
	// MaxScan caps the stream messages one request reads; an answer cut by it
	// carries a continuation cursor. Default 10,000.
	MaxScan int
	// MaxBytes caps the stream bytes one request reads (and so the size of a
	// chat page, which is further kept under the connection's max payload).
	// Default 4 MiB.
	MaxBytes int
	// MaxTime caps the time one request spends reading the stream. Default 2 s.
	MaxTime time.Duration
	// Concurrency is how many requests one instance reads at once; more
	// wait in their users' lines, served in turn (admission.go). Default 16
	// ($ROOMCAST_SYNC_CONCURRENCY).
	Concurrency int
	// UserConcurrency is how many of those one user's requests may take
	// (the user the gateway names in the request). Default a quarter of
	// Concurrency (4) ($ROOMCAST_SYNC_USER_CONCURRENCY).
	UserConcurrency int
	// UserQueue is how many of one user's requests may wait for a slot;
	// one more is refused at once, rate_limited with retryAfterMs. Default
	// 8 ($ROOMCAST_SYNC_USER_QUEUE).
	UserQueue int
	// QueueWait is how long a request may wait for a slot; one that waited
	// longer is refused (rate_limited) instead of read: its client has
	// waited long enough, and the gateway gives up at 2 s. Default 500 ms
	// ($ROOMCAST_SYNC_QUEUE_WAIT).
	QueueWait time.Duration
	// IndexDepth is how many of a room's latest messages the index keeps;
	// a read reaching further back walks the stream (exact, slower).
	// Default 256.
	IndexDepth int
	// IndexRooms is how many rooms the index keeps (the memory bound is
	// IndexRooms × IndexDepth × 24 bytes). Default 4096.
	IndexRooms int
	// TailMessages is how many of a room's latest messages the tail keeps
	// the bodies of, to answer reads without the stream (at most
	// IndexDepth; -1 keeps none). Default 128.
	TailMessages int
	// TailBytes bounds the memory of the tail over all rooms (the capacity
	// of the rooms' logs); beyond it, rooms lose their bodies. Default 64 MiB.
	TailBytes int

	// Logger receives the service's logs.
	Logger zerolog.Logger
	// Registry receives the service's metrics; nil means a new registry.
	Registry *prometheus.Registry

	// panicHook, in tests only, is called at each panic boundary with its
	// name (feed: half-way through observing a message; admit: a request
	// arrived, before admission; changes, chat: before the read), so a
	// test can panic there.
	panicHook func(where string)
	// serviceHook, in tests only, is given the service Run built before it
	// serves: the reader contract test and benchmark call its readers.
	serviceHook func(*service)
}

// Bind registers the service's own flags; the common ones are in flagenv.Common.
func (c *Config) Bind(s *flagenv.Set) {
	s.String(&c.HTTPAddr, "http-addr", "ROOMCAST_SYNC_HTTP_ADDR", "127.0.0.1:8082", "address of /healthz, /readyz and /metrics; empty for none")
	s.Duration(&c.SkewMargin, "skew-margin", "ROOMCAST_SYNC_SKEW_MARGIN", DefaultSkewMargin, "how far before `since` a timestamp read starts (publisher clock skew)")
	s.Int(&c.MaxLimit, "max-limit", "ROOMCAST_SYNC_MAX_LIMIT", DefaultMaxLimit, "largest page a request may ask for")
	s.Int(&c.MaxScan, "max-scan", "ROOMCAST_SYNC_MAX_SCAN", DefaultMaxScan, "stream messages one request reads at most")
	s.Duration(&c.MaxTime, "max-time", "ROOMCAST_SYNC_MAX_TIME", DefaultMaxTime, "time one request spends reading at most")
	s.Int(&c.Concurrency, "concurrency", "ROOMCAST_SYNC_CONCURRENCY", DefaultConcurrency, "requests read at once")
	s.Int(&c.UserConcurrency, "user-concurrency", "ROOMCAST_SYNC_USER_CONCURRENCY", 0, "requests of one user read at once (0: a quarter of -concurrency)")
	s.Int(&c.UserQueue, "user-queue", "ROOMCAST_SYNC_USER_QUEUE", DefaultUserQueue, "requests of one user that may wait for a slot; more are refused rate_limited")
	s.Duration(&c.QueueWait, "queue-wait", "ROOMCAST_SYNC_QUEUE_WAIT", DefaultQueueWait, "how long a request may wait for a slot before it is refused rate_limited")
	s.Int(&c.IndexDepth, "index-depth", "ROOMCAST_SYNC_INDEX_DEPTH", DefaultIndexDepth, "latest messages per room the index keeps (24 bytes each)")
	s.Int(&c.IndexRooms, "index-rooms", "ROOMCAST_SYNC_INDEX_ROOMS", DefaultIndexRooms, "rooms the index keeps")
	s.Int(&c.TailMessages, "tail-messages", "ROOMCAST_SYNC_TAIL_MESSAGES", DefaultTailMessages, "latest messages per room whose bodies are kept to answer reads from memory (-1: none)")
	s.Int(&c.TailBytes, "tail-bytes", "ROOMCAST_SYNC_TAIL_BYTES", DefaultTailBytes, "memory the kept bodies may take over all rooms, in bytes")
}

// Validate checks what can be checked without the network.
func (c Config) Validate() error {
	if err := flagenv.CheckNATSURL(c.NATSURL); err != nil {
		return err
	}
	switch {
	case c.SkewMargin < 0:
		return fmt.Errorf("sync: skew margin %s: want zero (default) or positive", c.SkewMargin)
	case c.DefaultLimit < 0, c.MaxLimit < 0, c.MaxScan < 0, c.MaxBytes < 0, c.Concurrency < 0, c.UserConcurrency < 0, c.UserQueue < 0, c.QueueWait < 0, c.IndexDepth < 0, c.IndexRooms < 0, c.TailBytes < 0:
		return fmt.Errorf("sync: limits must be zero (default) or positive")
	case c.TailMessages < -1:
		return fmt.Errorf("sync: tail messages %d: want -1 (none), zero (default) or positive", c.TailMessages)
	case c.MaxTime < 0:
		return fmt.Errorf("sync: max time %s: want zero (default) or positive", c.MaxTime)
	}
	c = c.withDefaults()
	if c.DefaultLimit > c.MaxLimit {
		return fmt.Errorf("sync: default limit %d is above max limit %d", c.DefaultLimit, c.MaxLimit)
	}
	return nil
}

// withDefaults fills zero values with the documented defaults.
func (c Config) withDefaults() Config {
	if c.SkewMargin == 0 {
		c.SkewMargin = DefaultSkewMargin
	}
	if c.MaxLimit == 0 {
		c.MaxLimit = DefaultMaxLimit
	}
	if c.DefaultLimit == 0 {
		c.DefaultLimit = min(DefaultLimit, c.MaxLimit)
	}
	if c.MaxScan == 0 {
		c.MaxScan = DefaultMaxScan
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.MaxTime == 0 {
		c.MaxTime = DefaultMaxTime
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.UserConcurrency == 0 {
		c.UserConcurrency = max(1, c.Concurrency/4)
	}
	if c.UserQueue == 0 {
		c.UserQueue = DefaultUserQueue
	}
	if c.QueueWait == 0 {
		c.QueueWait = DefaultQueueWait
	}
	if c.IndexDepth == 0 {
		c.IndexDepth = DefaultIndexDepth
	}
	if c.IndexRooms == 0 {
		c.IndexRooms = DefaultIndexRooms
	}
	switch c.TailMessages {
	case 0:
		c.TailMessages = DefaultTailMessages
	case -1:
		c.TailMessages = 0
	}
	if c.TailBytes == 0 {
		c.TailBytes = DefaultTailBytes
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return c
}
