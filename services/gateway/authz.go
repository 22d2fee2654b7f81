package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
)

// authorizer decides whether a user may join a room (and so read its state,
// changes and messages) when the room's name alone cannot say.
type authorizer interface {
	allowJoin(ctx context.Context, user string, r proto.Room) error
	forget(user string, r proto.Room)
	// forgetUser drops every cached answer about user (a revoke).
	forgetUser(user string)
}

var _ authorizer = (*natsAuthorizer)(nil)

// natsAuthorizer asks authz.join over NATS request-reply and caches positive
// answers for a while. Negative and missing answers are never cached: a user
// just granted access must not wait for an entry to expire.
type natsAuthorizer struct {
	nc      *nats.Conn
	log     zerolog.Logger
	timeout time.Duration
	ttl     time.Duration

	// optional lets joins through while no service answers authz.join
	// (Config.AuthzOptional).
	optional bool
	// missing is set while no service answers authz.join, so that the
	// outage is logged once, not at every join.
	missing atomic.Bool

	mu    sync.Mutex
	cache map[string]time.Time // user + "\x00" + parent room → expiry
	// forgets counts kicks and revokes: an answer asked before one of them
	// is not cached after it (the yes may be the one just taken back).
	forgets uint64
	// swept is when a full cache was last swept: at most once per
	// sweepEvery, since a sweep reads every entry.
	swept  time.Time
	sweeps int // how many there were (tests)
}

// noAuthorizer answers a join that no service was there to decide.
func (a *natsAuthorizer) noAuthorizer(r proto.Room) error {
	if a.optional {
		return nil
	}
	if !a.missing.Swap(true) {
		a.log.Warn().Str("subject", proto.SubjectAuthzJoin).
			Msg("no service answers authz.join: joins to org and board rooms are refused until one does (ROOMCAST_AUTHZ_OPTIONAL=true lets them through, for development)")
	}
	return proto.Errorf(proto.CodeUnavailable, "no service answers %s: cannot check access to %s", proto.SubjectAuthzJoin, r.Name())
}

// maxAuthzCache bounds the cache; past it, expired entries are swept (at
// most once per sweepEvery) and, while there is no room, nothing more is
// cached.
const maxAuthzCache = 100_000

func cacheKey(user string, r proto.Room) string { return user + "\x00" + r.Parent().Name() }

func (a *natsAuthorizer) allowJoin(ctx context.Context, user string, r proto.Room) error {
	key := cacheKey(user, r)
	now := time.Now()
	a.mu.Lock()
	exp, ok := a.cache[key]
	forgets := a.forgets
	a.mu.Unlock()
	if ok && now.Before(exp) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	var reply json.RawMessage
	// The question names the parent room: board-B-tasks shares board-B's
	// members, so one answer (and one cache entry) covers the three.
	err := proto.Request(ctx, a.nc, proto.SubjectAuthzJoin, proto.AuthzJoinRequest{UserID: user, RoomName: r.Parent().Name()}, &reply)
	if errors.Is(err, nats.ErrNoResponders) {
		return a.noAuthorizer(r)
	}
	a.missing.Store(false)
	if err != nil {
		if proto.CodeOf(err) == proto.CodeUnavailable {
			return proto.Errorf(proto.CodeUnavailable, "could not check access to %s in time: retry later", r.Name())
		}
		return proto.Errorf(proto.CodeForbidden, "access to %s denied", r.Name())
	}
	allow, err := proto.ParseAuthzJoinReply(reply)
	if err != nil {
		a.log.Warn().Err(err).Str("user", user).Str("room", r.Name()).Msg("authorizer answered neither yes nor no")
	}
	if !allow {
		return proto.Errorf(proto.CodeForbidden, "access to %s denied", r.Name())
	}
	if a.ttl > 0 {
		a.mu.Lock()
		if a.forgets == forgets && a.roomLocked(now) {
			a.cache[key] = now.Add(a.ttl)
		}
		a.mu.Unlock()
	}
	return nil
}

// roomLocked reports whether the cache may take one more entry, sweeping
// the expired ones when it is full, at most once per sweepEvery. Called
// with mu held.
func (a *natsAuthorizer) roomLocked(now time.Time) bool {
	if len(a.cache) < maxAuthzCache {
		return true
	}
	if now.Sub(a.swept) < sweepEvery {
		return false
	}
	a.swept = now
	a.sweeps++
	for k, e := range a.cache {
		if now.After(e) {
			delete(a.cache, k)
		}
	}
	return len(a.cache) < maxAuthzCache
}

func (a *natsAuthorizer) forget(user string, r proto.Room) {
	a.mu.Lock()
	delete(a.cache, cacheKey(user, r))
	a.forgets++
	a.mu.Unlock()
}

// forgetUser scans the whole cache: revokes are rare, and a cache keyed by
// user first would cost a map per user on every join.
func (a *natsAuthorizer) forgetUser(user string) {
	prefix := user + "\x00"
	a.mu.Lock()
	defer a.mu.Unlock()
	a.forgets++
	for k := range a.cache {
		if strings.HasPrefix(k, prefix) {
			delete(a.cache, k)
		}
	}
}

// authorize says whether s's user may join r, or read its state or history.
func (g *Gateway) authorize(ctx context.Context, s *socket, r proto.Room) error {
	return g.authorizeUser(ctx, s.user, r)
}

// authorizeUser says whether user may join r, or read its state or history.
func (g *Gateway) authorizeUser(ctx context.Context, user string, r proto.Room) error {
	switch r.Kind() {
	case proto.KindUser, proto.KindChat:
		if r.HasMember(user) {
			return nil
		}
		return proto.Errorf(proto.CodeForbidden, "%s is not yours", r.Name())
	case proto.KindClient:
		return proto.Errorf(proto.CodeForbidden, "client rooms are managed by the server")
	}
	return g.authz.allowJoin(ctx, user, r)
}
