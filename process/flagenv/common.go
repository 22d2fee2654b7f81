package flagenv

import (
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
)

// Common are the settings every roomcast program shares.
type Common struct {
	// NATSURL is the NATS server to connect to. In the all-in-one program an
	// empty value means: start an embedded nats-server.
	NATSURL string
	// SubjectPrefix is the first token(s) of room subjects. Default "rooms".
	SubjectPrefix string
	// LogLevel is a zerolog level: trace, debug, info, warn, error. Default info.
	LogLevel string
	// Replicas of stream ROOMS and the buckets. Default 1.
	Replicas int
	// MaxAge of stream ROOMS and of room state. Default 720h (30 days).
	MaxAge time.Duration
	// MaxTokenLifetime is the longest a token may live, and how long
	// REVOCATIONS keeps a revoke. Default 24h.
	MaxTokenLifetime time.Duration
	// RecoveryTTL is how long after a cut a client may recover its
	// session, SESSIONS's TTL; negative: recovery off (the gateway's
	// setting; "0" in the environment). Default 5m.
	RecoveryTTL time.Duration
}

// Bind registers the common flags. natsDefault is the NATS URL used when
// neither flag nor environment gives one.
func (c *Common) Bind(s *Set, natsDefault string) {
	s.String(&c.NATSURL, "nats-url", "ROOMCAST_NATS_URL", natsDefault, "NATS server URL(s), comma-separated")
	s.String(&c.SubjectPrefix, "subject-prefix", "ROOMCAST_SUBJECT_PREFIX", proto.DefaultPrefix, "first token(s) of room subjects")
	s.String(&c.LogLevel, "log-level", "ROOMCAST_LOG_LEVEL", "info", "log level: trace, debug, info, warn or error")
	s.Int(&c.Replicas, "replicas", "ROOMCAST_REPLICAS", proto.DefaultReplicas, "replicas of stream ROOMS and the KV buckets")
	s.Duration(&c.MaxTokenLifetime, "max-token-lifetime", "ROOMCAST_MAX_TOKEN_LIFETIME", proto.DefaultMaxTokenLifetime, "the longest a token may live (exp - iat); REVOCATIONS keeps each revoke this long")
	s.Duration(&c.MaxAge, "max-age", "ROOMCAST_MAX_AGE", proto.DefaultMaxAge, "how long stream ROOMS keeps messages and ROOM_STATE a room's state")
	s.Func("recovery-ttl", "how long after a cut a client may recover its session, rooms and missed broadcasts (default 5m; 0: no recovery; $ROOMCAST_RECOVERY_TTL)", func(v string) error {
		return parseRecoveryTTL(&c.RecoveryTTL, v)
	})
	if v, ok := os.LookupEnv("ROOMCAST_RECOVERY_TTL"); ok {
		if err := parseRecoveryTTL(&c.RecoveryTTL, v); err != nil {
			c.RecoveryTTL = badRecoveryTTL // Store says so
		}
	}
}

// badRecoveryTTL marks a ROOMCAST_RECOVERY_TTL that did not parse.
const badRecoveryTTL = math.MinInt64

// parseRecoveryTTL reads a duration, 0 meaning off (-1).
func parseRecoveryTTL(p *time.Duration, v string) error {
	v = strings.TrimSpace(v)
	d, err := time.ParseDuration(v)
	if v == "0" {
		d, err = 0, nil
	}
	if err != nil || d < 0 {
		return fmt.Errorf("%q: want a duration such as 5m, or 0 for no recovery", v)
	}
	if d == 0 {
		d = -1
	}
	*p = d
	return nil
}

// Store is the stream and bucket configuration c describes, with its subject
// mapping checked.
func (c Common) Store() (proto.StoreConfig, error) {
	subjects, err := proto.NewSubjects(c.SubjectPrefix)
	if err != nil {
		return proto.StoreConfig{}, fmt.Errorf("ROOMCAST_SUBJECT_PREFIX: %w", err)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return proto.StoreConfig{}, fmt.Errorf("ROOMCAST_REPLICAS=%d: want 1 to 5", c.Replicas)
	}
	if c.MaxAge <= 0 {
		return proto.StoreConfig{}, fmt.Errorf("ROOMCAST_MAX_AGE=%s: want a positive duration", c.MaxAge)
	}
	if c.MaxTokenLifetime < 0 {
		return proto.StoreConfig{}, fmt.Errorf("ROOMCAST_MAX_TOKEN_LIFETIME=%s: want a positive duration", c.MaxTokenLifetime)
	}
	if c.RecoveryTTL == badRecoveryTTL {
		return proto.StoreConfig{}, fmt.Errorf("ROOMCAST_RECOVERY_TTL: want a duration such as 5m, or 0 for no recovery")
	}
	store := proto.StoreConfig{Subjects: subjects, Replicas: c.Replicas, MaxAge: c.MaxAge, MaxTokenLifetime: c.MaxTokenLifetime}
	if c.RecoveryTTL > 0 {
		store.SessionTTL = c.RecoveryTTL
	}
	return store, nil
}

// CheckNATSURL checks a comma-separated list of NATS URLs without dialing.
func CheckNATSURL(urls string) error {
	for _, u := range strings.Split(urls, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil {
			return fmt.Errorf("ROOMCAST_NATS_URL=%q: %v", urls, err)
		}
		switch p.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("ROOMCAST_NATS_URL=%q: want nats://host:port (or tls://, ws://, wss://)", urls)
		}
		if p.Host == "" {
			return fmt.Errorf("ROOMCAST_NATS_URL=%q: no host", urls)
		}
	}
	return nil
}

// Logger is a JSON logger to w at c's level, with timestamps.
func (c Common) Logger(w io.Writer) (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(c.LogLevel)
	if err != nil || c.LogLevel == "" {
		return zerolog.Logger{}, fmt.Errorf("ROOMCAST_LOG_LEVEL=%q: want trace, debug, info, warn or error", c.LogLevel)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}
