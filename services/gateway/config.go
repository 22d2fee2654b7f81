package gateway

import (
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/proto"
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

	// TokenLeeway is the clock skew allowed between a token's issuer and the
	// gateway: a token whose iat or nbf is up to this far ahead of the
	// gateway's clock is valid. exp gets none. Default 10 s; negative means
	// none ($ROOMCAST_JWT_LEEWAY).
	TokenLeeway time.Duration

	// AllowedOrigins are the Origin headers a browser may connect from,
	// comma-separated in $ROOMCAST_ALLOWED_ORIGINS; "*" allows any, and
	// scheme://host:* allows host on any port (http://localhost:*). Requests
	// without an Origin header (non-browser clients) are always allowed.
	// Default: none, so only non-browser clients connect (roomcast serve in
	// development mode allows DevOrigins).
	AllowedOrigins []string

	// ReadyChecks are extra conditions of /readyz (the all-in-one program adds
	// its embedded server and stream checks). Each returns nil when ready.
	ReadyChecks map[string]func() error

	// GatewayID names this gateway in PRESENCE keys and logs. Default: a
	// random id at start (so a restarted gateway's old entries just expire).
	GatewayID string

	// PingInterval is how often the server pings each socket (Engine.IO v4
	// heartbeat, server → client). Default 25 s, as Socket.IO's.
	PingInterval time.Duration
	// PingTimeout is how long a pong may take before the socket is closed.
	// Default 20 s, as Socket.IO's.
	PingTimeout time.Duration
	// ConnectTimeout is how long a new socket may take to send its CONNECT.
	// Default 10 s.
	ConnectTimeout time.Duration
	// MaxPayload bounds one incoming frame in bytes (advertised to clients as
	// maxPayload); a bigger frame closes the socket, and so does a
	// compressed one (permessage-deflate) that inflates past it. Default
	// 64 KiB.
	MaxPayload int
	// SendQueueBytes bounds what may wait to be written to one socket; a
	// socket whose queue would grow past it is disconnected as too slow.
	// Default 1 MiB.
	SendQueueBytes int
	// TCPSendBuffer, when positive, sets SO_SNDBUF of each socket's TCP
	// connection: less kernel memory per socket, and a stalled client is
	// noticed (its send queue fills) sooner. Default 0: the OS default.
	TCPSendBuffer int
	// WriteTimeout bounds one write to a socket. Default 10 s.
	WriteTimeout time.Duration
	// DeflateThreshold: a client that offers permessage-deflate (browsers
	// and the stock Node client do) gets it, without context takeover, and
	// broadcasts whose packet is at least this many bytes are compressed,
	// once per gateway, and sent compressed to every member that
	// negotiated it. Default 512 (docs/decisions.md, permessage-deflate);
	// negative: permessage-deflate is off (never negotiated).
	DeflateThreshold int

	// RateLimit is the sustained inbound frames per second per socket
	// (endpoint calls, pongs, pings, noops: every frame but a close), and
	// RateBurst how many may come at once. A frame beyond is dropped, an
	// endpoint call among them answered rate_limited with retryAfterMs; a
	// socket whose refused frames outrun the refill by more than RateBurst
	// is closed with 1008 "rate limit exceeded". Defaults 20/s and 50.
	RateLimit float64
	RateBurst int
	// MaxSocketsPerUser caps one user's sockets on this gateway; the CONNECT
	// of one more is refused with CONNECT_ERROR "too many sockets for this
	// user…" (data.code 429). Default 32 ($ROOMCAST_MAX_SOCKETS_PER_USER;
	// why in docs/decisions.md, "Limits per user").
	MaxSocketsPerUser int
	// UserRateLimit and UserRateBurst are each user's budget of endpoint
	// calls on this gateway, shared by all of the user's sockets, on top of
	// each socket's own; calls beyond are answered rate_limited with
	// retryAfterMs. Defaults 40/s and 200 ($ROOMCAST_USER_RATE_LIMIT,
	// $ROOMCAST_USER_RATE_BURST).
	UserRateLimit float64
	UserRateBurst int
	// FloodCooldown is how long, after one of its sockets was closed for
	// flooding (1008 "rate limit exceeded"), a user's CONNECTs are refused
	// (CONNECT_ERROR, data.code 429): otherwise every reconnect brings a
	// fresh socket budget to flood with. Default 400 ms: shorter than the
	// stock client's first reconnection delay (1 s ± 50 %, so at least
	// 500 ms), which takes a CONNECT_ERROR as final and would stay
	// disconnected if it met the cooldown ($ROOMCAST_FLOOD_COOLDOWN).
	FloodCooldown time.Duration
	// MaxRoomsPerSocket caps the rooms a socket joins with addToRoom (its
	// user and client rooms do not count). Default 200.
	MaxRoomsPerSocket int

	// AuthzTimeout bounds an authz.join request; no answer in time denies
	// the join with unavailable. Default 1 s.
	AuthzTimeout time.Duration
	// AuthzOptional lets joins to org and board rooms through while no
	// service answers authz.join at all (a slow or refusing authorizer
	// still decides). For development: roomcast serve turns it on when it
	// generates its secret. Default false: such joins fail with
	// unavailable ($ROOMCAST_AUTHZ_OPTIONAL).
	AuthzOptional bool
	// AuthzCacheTTL is how long a positive authz.join answer is reused.
	// Default 30 s; negative means no caching.
	AuthzCacheTTL time.Duration
	// RequestTimeout bounds requests to roomstate and sync. Default 2 s.
	RequestTimeout time.Duration

	// FanoutWorkers is how many goroutines turn NATS messages into socket
	// frames; each owns one channel that a room's subscriptions always feed,
	// so a room's messages stay in order. Default 4.
	FanoutWorkers int
	// FanoutQueue is the length of each fan-out channel; a message that
	// finds its channel full is dropped, never waited for (counted in
	// roomcast_gateway_fanout_dropped_total). Default 65536.
	FanoutQueue int
	// WritevOnly makes the fan-out workers write each socket with a writev
	// of its own. By default, on Linux with io_uring, a worker sends to up
	// to 64 sockets in one submission (fewer system calls; docs/decisions.md,
	// "Batched sends"), and falls back to writev where io_uring is missing
	// or refused ($ROOMCAST_WRITEV_ONLY).
	WritevOnly bool

	// PersonalSubscriptions is how the personal rooms (user-, client- and
	// chat- rooms: a socket has two or three of its own) get their messages.
	// PersonalShared, the default: three gateway-wide wildcard subscriptions,
	// made at start, cover all of them, and each message goes to whatever
	// local sockets it names (none: dropped). A socket then costs no NATS
	// subscription and its connect no SUB or flush; each gateway receives
	// every personal message of the deployment, which is cheap next to the
	// boards' traffic while gateways are few (docs/decisions.md).
	// PersonalPerRoom: a subscription per local user room and client room
	// and two per local user for chats, which exist while the room (the
	// user) has local sockets, as DESIGN.md first had it: for a deployment
	// of many gateways with heavy personal traffic
	// ($ROOMCAST_PERSONAL_SUBSCRIPTIONS=shared|per-room).
	PersonalSubscriptions string

	// SubscriptionLinger, when positive, is how long a room's (and a user's
	// chat) NATS subscriptions outlive the last local socket in it, so that
	// sockets coming back (a reconnect storm, a page reload) find them: no
	// SUB and UNSUB per socket, no flush; messages meanwhile go nowhere.
	// Default 0: dropped with the last socket, as DESIGN.md has it ("a NATS
	// subscription exists exactly while a local room has members")
	// ($ROOMCAST_SUBSCRIPTION_LINGER, e.g. 10s).
	SubscriptionLinger time.Duration

	// RecoveryTTL is how long after a cut a client may come back with its
	// session (connection state recovery: its rooms, and the broadcasts
	// it missed, replayed from stream ROOMS; docs/decisions.md,
	// "Recovery"). It is SESSIONS's TTL when this gateway creates the
	// bucket. Default 5 min; negative: no recovery, no pid, no offsets
	// ($ROOMCAST_RECOVERY_TTL, 0 for off: flagenv.Common, which
	// `roomcast streams ensure` shares).
	RecoveryTTL time.Duration

	// ReadGoroutines gives every socket a reader goroutine blocked in a read
	// (2.5–3 KB per idle socket) instead of the gateway's epoll poller, which
	// reads a socket only when it is readable. Always so where there is no
	// epoll (not Linux). Default false.
	ReadGoroutines bool

	// Pprof serves net/http/pprof under /debug/pprof/ on HTTPAddr, for
	// profiling a running gateway (heap, goroutines, CPU). Off by default:
	// profiles show internals and a CPU profile costs CPU ($ROOMCAST_PPROF).
	Pprof bool

	// HTTPReadHeaderTimeout bounds how long a client may take to send a
	// request head on HTTPAddr: the upgrade request of a socket, a plain
	// request (/healthz, /readyz, /metrics), and each further request on a
	// kept-alive connection from its first byte. A client that trickles its
	// head (slowloris) is cut at it. Default 10 s
	// ($ROOMCAST_HTTP_READ_HEADER_TIMEOUT).
	HTTPReadHeaderTimeout time.Duration
	// HTTPIdleTimeout is how long a kept-alive plain HTTP connection may
	// wait for its next request before it is closed (sockets have their own
	// heartbeat). Default 60 s, about what load balancers and probes keep an
	// idle connection for ($ROOMCAST_HTTP_IDLE_TIMEOUT).
	HTTPIdleTimeout time.Duration

	// DrainGrace is how long a stopping gateway takes to disconnect its
	// sockets, spread so that they reconnect elsewhere gradually. Default 5 s.
	DrainGrace time.Duration

	// Logger receives the gateway's logs.
	Logger zerolog.Logger
	// Registry receives the gateway's metrics and is served on /metrics; nil
	// means a new registry.
	Registry *prometheus.Registry

	// panicHook, in tests only, is called at each panic boundary with its
	// name (fanout: after each member is queued a broadcast; kick, revoke,
	// revocation: before the user's sockets are changed; presence: before
	// the read; endpoint: before a CONNECT or call is handled), so a test
	// can panic there.
	panicHook func(where string)
}

// DefaultTokenLeeway is Config.TokenLeeway's default.
const DefaultTokenLeeway = 10 * time.Second

// DefaultDeflateThreshold is Config.DeflateThreshold's default: below it a
// broadcast's packet saves too few bytes to be worth a frame of its own
// (docs/decisions.md, permessage-deflate).
const DefaultDeflateThreshold = 512

// The values of Config.PersonalSubscriptions.
const (
	PersonalShared  = "shared"
	PersonalPerRoom = "per-room"
)

// DevOrigins are the origins roomcast serve allows in development mode:
// pages served from this machine, on any port.
var DevOrigins = []string{"http://localhost:*", "http://127.0.0.1:*"}

// Bind registers the gateway's own flags; the common ones are in flagenv.Common.
func (c *Config) Bind(s *flagenv.Set) {
	s.String(&c.HTTPAddr, "http-addr", "ROOMCAST_HTTP_ADDR", "127.0.0.1:8080", "gateway listen address")
	s.String(&c.JWTSecret, "jwt-secret", "ROOMCAST_JWT_SECRET", "", "HS256 secret for tokens")
	s.String(&c.GatewayID, "gateway-id", "ROOMCAST_GATEWAY_ID", "", "this gateway's name in presence keys (default random)")
	s.Duration(&c.DrainGrace, "drain-grace", "ROOMCAST_DRAIN_GRACE", 5*time.Second, "how long a stopping gateway takes to disconnect its sockets")
	s.Duration(&c.HTTPReadHeaderTimeout, "http-read-header-timeout", "ROOMCAST_HTTP_READ_HEADER_TIMEOUT", 10*time.Second, "how long a client may take to send a request head")
	s.Duration(&c.HTTPIdleTimeout, "http-idle-timeout", "ROOMCAST_HTTP_IDLE_TIMEOUT", 60*time.Second, "how long a kept-alive HTTP connection may wait for its next request")
	s.Duration(&c.PingInterval, "ping-interval", "ROOMCAST_PING_INTERVAL", 25*time.Second, "how often each socket is pinged")
	s.Duration(&c.PingTimeout, "ping-timeout", "ROOMCAST_PING_TIMEOUT", 20*time.Second, "how long a pong may take before the socket is closed")
	s.Int(&c.DeflateThreshold, "deflate-threshold", "ROOMCAST_DEFLATE_THRESHOLD", DefaultDeflateThreshold, "broadcasts of at least this many bytes go compressed to clients that negotiated permessage-deflate; -1: no permessage-deflate")
	s.Int(&c.SendQueueBytes, "send-queue-bytes", "ROOMCAST_SEND_QUEUE_BYTES", 1<<20, "bytes that may wait for one socket before it is cut off as slow")
	s.Duration(&c.SubscriptionLinger, "subscription-linger", "ROOMCAST_SUBSCRIPTION_LINGER", 0, "keep a room's NATS subscriptions this long after its last socket leaves (0: drop at once)")
	s.String(&c.PersonalSubscriptions, "personal-subscriptions", "ROOMCAST_PERSONAL_SUBSCRIPTIONS", PersonalShared, "how user, client and chat rooms are subscribed: shared (three wildcards per gateway) or per-room")
	s.Duration(&c.FloodCooldown, "flood-cooldown", "ROOMCAST_FLOOD_COOLDOWN", 400*time.Millisecond, "how long a user whose socket was closed for flooding may not connect")
	s.Int(&c.MaxSocketsPerUser, "max-sockets-per-user", "ROOMCAST_MAX_SOCKETS_PER_USER", 32, "sockets one user may hold on this gateway; one more is refused at CONNECT")
	s.Int(&c.UserRateBurst, "user-rate-burst", "ROOMCAST_USER_RATE_BURST", 200, "endpoint calls one user's sockets may make at once on this gateway")
	s.Func("user-rate-limit", "endpoint calls per second one user's sockets may make on this gateway, sustained (default 40; $ROOMCAST_USER_RATE_LIMIT)", func(v string) error {
		return parseRate(&c.UserRateLimit, v)
	})
	if v, ok := os.LookupEnv("ROOMCAST_USER_RATE_LIMIT"); ok {
		if err := parseRate(&c.UserRateLimit, v); err != nil {
			c.UserRateLimit = -1 // Validate says so
		}
	}
	s.Bool(&c.Pprof, "pprof", "ROOMCAST_PPROF", false, "serve net/http/pprof under /debug/pprof/ (for profiling)")
	s.Bool(&c.WritevOnly, "writev-only", "ROOMCAST_WRITEV_ONLY", false, "fan-out writes each socket with its own writev instead of io_uring submissions of up to 64 sends")
	s.Duration(&c.TokenLeeway, "jwt-leeway", "ROOMCAST_JWT_LEEWAY", DefaultTokenLeeway, "clock skew allowed to a token's iat and nbf (negative: none)")
	s.String(&c.JWTPublicKeyFile, "jwt-public-key", "ROOMCAST_JWT_PUBLIC_KEY", "", "PEM file with an Ed25519 or RSA public key for tokens")
	s.Bool(&c.AuthzOptional, "authz-optional", "ROOMCAST_AUTHZ_OPTIONAL", false, "let joins to org and board rooms through while no service answers authz.join (development)")
	s.Func("allowed-origins", "comma-separated Origin allow-list, * for any ($ROOMCAST_ALLOWED_ORIGINS)", func(v string) error {
		c.AllowedOrigins = splitList(v)
		return nil
	})
	if v, ok := os.LookupEnv("ROOMCAST_ALLOWED_ORIGINS"); ok {
		c.AllowedOrigins = splitList(v)
	}
}

// parseRate reads a positive number of calls per second.
func parseRate(p *float64, v string) error {
	r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || r <= 0 || math.IsInf(r, 0) || math.IsNaN(r) {
		return fmt.Errorf("%q: want a positive number of calls per second", v)
	}
	*p = r
	return nil
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
	dur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	dur(&c.PingInterval, 25*time.Second)
	dur(&c.PingTimeout, 20*time.Second)
	dur(&c.ConnectTimeout, 10*time.Second)
	dur(&c.WriteTimeout, 10*time.Second)
	dur(&c.AuthzTimeout, time.Second)
	dur(&c.RequestTimeout, 2*time.Second)
	dur(&c.DrainGrace, 5*time.Second)
	dur(&c.FloodCooldown, 400*time.Millisecond)
	dur(&c.HTTPReadHeaderTimeout, 10*time.Second)
	dur(&c.HTTPIdleTimeout, 60*time.Second)
	if c.Store.MaxTokenLifetime <= 0 {
		c.Store.MaxTokenLifetime = proto.DefaultMaxTokenLifetime
	}
	if c.RecoveryTTL == 0 {
		c.RecoveryTTL = proto.DefaultSessionTTL
	}
	if c.RecoveryTTL > 0 {
		c.Store.SessionTTL = c.RecoveryTTL
	}
	if c.TokenLeeway == 0 {
		c.TokenLeeway = DefaultTokenLeeway
	}
	if c.AuthzCacheTTL == 0 {
		c.AuthzCacheTTL = 30 * time.Second
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = 64 << 10
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = 1 << 20
	}
	if c.DeflateThreshold == 0 {
		c.DeflateThreshold = DefaultDeflateThreshold
	}
	if c.RateLimit <= 0 {
		c.RateLimit = 20
	}
	if c.RateBurst <= 0 {
		c.RateBurst = 50
	}
	if c.MaxSocketsPerUser <= 0 {
		c.MaxSocketsPerUser = 32
	}
	if c.UserRateLimit <= 0 {
		c.UserRateLimit = 40
	}
	if c.UserRateBurst <= 0 {
		c.UserRateBurst = 200
	}
	if c.MaxRoomsPerSocket <= 0 {
		c.MaxRoomsPerSocket = 200
	}
	if c.FanoutWorkers <= 0 {
		c.FanoutWorkers = 4
	}
	if c.FanoutQueue <= 0 {
		c.FanoutQueue = 65536
	}
	if c.GatewayID == "" {
		c.GatewayID = randomID(12)
	}
	if c.PersonalSubscriptions == "" {
		c.PersonalSubscriptions = PersonalShared
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
		if _, _, err := loadPublicKey(c.JWTPublicKeyFile); err != nil {
			return fmt.Errorf("ROOMCAST_JWT_PUBLIC_KEY: %v", err)
		}
	}
	if c.UserRateLimit < 0 || c.MaxSocketsPerUser < 0 || c.UserRateBurst < 0 {
		return fmt.Errorf("ROOMCAST_USER_RATE_LIMIT, ROOMCAST_USER_RATE_BURST, ROOMCAST_MAX_SOCKETS_PER_USER: want positive numbers (or unset for the defaults)")
	}
	switch c.PersonalSubscriptions {
	case "", PersonalShared, PersonalPerRoom:
	default:
		return fmt.Errorf("ROOMCAST_PERSONAL_SUBSCRIPTIONS=%s: must be %s or %s", c.PersonalSubscriptions, PersonalShared, PersonalPerRoom)
	}
	if c.GatewayID != "" {
		if err := proto.ValidateID(c.GatewayID); err != nil {
			return fmt.Errorf("ROOMCAST_GATEWAY_ID: %v", err)
		}
	}
	return nil
}
