package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// revocations is this gateway's view of KV REVOCATIONS: each user's last
// revoke. A CONNECT reads it from memory, never from the bucket (no round
// trip on the hot path). Two writers keep it current: a watcher on the
// bucket (whatever any gateway or `roomcast revoke` records, and the
// bucket's content at start) and the revoke heard on the control subject,
// which updates it at once, before the bucket echoes it back.
type revocations struct {
	// ttl is MaxTokenLifetime: a revoke older than that refuses no token
	// that has not expired anyway, so it is dropped (prune).
	ttl time.Duration

	mu sync.RWMutex
	at map[string]time.Time // user → last revoke
}

func (r *revocations) init(ttl time.Duration) {
	r.ttl = ttl
	r.at = map[string]time.Time{}
}

// note records u's revoke at t, keeping the later of t and what is known,
// and reports whether t was later.
func (r *revocations) note(u string, t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.at[u]; ok && !t.After(old) {
		return false
	}
	r.at[u] = t
	return true
}

// drop forgets u's revoke: its entry was deleted from the bucket (by hand,
// to undo a revoke).
func (r *revocations) drop(u string) {
	r.mu.Lock()
	delete(r.at, u)
	r.mu.Unlock()
}

// refuses reports whether a token of u issued at iat (zero: it has none)
// is revoked: it was issued at or before u's last revoke, or cannot say
// when it was issued while a revoke is on record.
func (r *revocations) refuses(u string, iat time.Time) bool {
	r.mu.RLock()
	t, ok := r.at[u]
	r.mu.RUnlock()
	return ok && (iat.IsZero() || !iat.After(t))
}

// prune drops the revokes older than ttl.
func (r *revocations) prune(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for u, t := range r.at {
		if now.Sub(t) > r.ttl {
			delete(r.at, u)
		}
	}
}

// watchRevocations binds KV REVOCATIONS (creating it when missing, as
// presence does), loads its entries into g.revoked and keeps them current
// until stop is called. It returns once the entries present at start are
// in, so a gateway started after a revoke refuses the revoked tokens from
// its first CONNECT; it fails when the bucket cannot be read within
// RequestTimeout.
func (g *Gateway) watchRevocations(ctx context.Context) (stop func(), err error) {
	js, err := jetstream.New(g.nc)
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	kv, err := js.KeyValue(bctx, proto.BucketRevocations)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(bctx, g.cfg.Store.RevocationsBucket())
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", proto.BucketRevocations, err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx)
	if err != nil {
		wcancel()
		return nil, fmt.Errorf("watch %s: %w", proto.BucketRevocations, err)
	}
	for loaded := false; !loaded; {
		select {
		case e := <-w.Updates():
			if e == nil {
				loaded = true // the entries present at start are all in
				break
			}
			g.applyRevocation(e)
		case <-bctx.Done():
			_ = w.Stop()
			wcancel()
			return nil, fmt.Errorf("load %s: %w", proto.BucketRevocations, bctx.Err())
		}
	}
	g.revKV = kv
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(min(g.revoked.ttl, time.Hour))
		defer t.Stop()
		for {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					g.applyRevocation(e)
				}
			case now := <-t.C:
				g.revoked.prune(now)
			case <-done:
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		_ = w.Stop()
		wcancel()
	}, nil
}

// applyRevocation folds one REVOCATIONS entry into the view. A revoke later
// than the one known also ends the user's sockets, as the control message
// does: a gateway that missed it (cut off from NATS at the time) catches up
// here. All of them: a socket does not keep its token's iat (8 more bytes
// per socket would cost it a size class), and a socket of the user that
// connected after the revoke with a fresh token is rare (the echo of a
// revoke from the other gateways comes milliseconds after the message).
func (g *Gateway) applyRevocation(e jetstream.KeyValueEntry) {
	u := e.Key()
	if proto.ValidateID(u) != nil {
		return
	}
	defer g.guard.Recover("revocation", func() { g.failClosed(u, true) })
	g.hook("revocation")
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		g.revoked.drop(u)
		g.log.Info().Str("user", u).Msg("revoke withdrawn from " + proto.BucketRevocations)
		return
	}
	r, ok := proto.ParseRevocation(e.Value())
	if !ok {
		g.log.Warn().Str("user", u).Msg("ignored a " + proto.BucketRevocations + " entry that is not {revokedAt}")
		return
	}
	at := time.UnixMilli(r.RevokedAt)
	if !g.revoked.note(u, at) {
		return
	}
	g.authz.forgetUser(u)
	for _, s := range g.userSockets(u) {
		s.closeWith("revoked", disconnectFrame, normalCloseFrm)
	}
}

// onRevoke ends every socket of the user with a server DISCONNECT (so the
// stock client does not reconnect by itself), after noting the revoke, so
// that the same token cannot come straight back, and dropping the user's
// cached authorizations. The revoke's time is the body's revokedAt when it
// has one (`roomcast revoke` sends it: every gateway then records the same
// time), else this gateway's clock. Then it records the revoke in
// REVOCATIONS: every gateway that hears it does (an idempotent put), so
// the record exists while any gateway runs, and a gateway started later
// loads it.
func (g *Gateway) onRevoke(m *nats.Msg) {
	u := proto.UserOfRevokeSubject(m.Subject)
	if u == "" {
		return
	}
	defer g.guard.Recover("revoke", func() {
		g.revoked.note(u, time.Now())
		g.failClosed(u, true)
	})
	g.hook("revoke")
	now := time.Now()
	at := now
	if r, ok := proto.ParseRevocation(m.Data); ok {
		// Not later than the leeway ahead: a revoke dated in the future
		// would refuse tokens that have not been issued yet.
		at = time.UnixMilli(min(r.RevokedAt, now.Add(max(g.cfg.TokenLeeway, 0)).UnixMilli()))
	}
	g.revoked.note(u, at)
	g.authz.forgetUser(u)
	n := 0
	for _, s := range g.userSockets(u) {
		s.closeWith("revoked", disconnectFrame, normalCloseFrm)
		n++
	}
	g.log.Info().Str("user", u).Time("revokedAt", at).Int("sockets", n).Msg("revoked")
	if g.revKV == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.RequestTimeout)
	defer cancel()
	if err := proto.RecordRevocation(ctx, g.revKV, u, at); err != nil {
		g.log.Error().Err(err).Str("user", u).Msg("revoke not recorded; the other gateways and `roomcast revoke` may still record it")
	}
}
