package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
)

// presence keeps this gateway's view of its users in KV PRESENCE: key
// PresenceKey(user, gateway) = {active}, for every local user who has said
// updateClient at least once; active when any of the user's sockets last
// said true. Entries are rewritten every third of the bucket's TTL while the
// gateway lives, and deleted when the user's last local socket goes; a dead
// gateway's entries expire. One goroutine does every write, so sockets never
// wait for JetStream.
type presence struct {
	g   *Gateway
	log zerolog.Logger
	ttl time.Duration

	mu    sync.Mutex
	dirty map[string]struct{}
	wake  chan struct{}

	// Owned by the run goroutine.
	kv      jetstream.KeyValue
	written map[string]bool
}

func newPresence(g *Gateway) *presence {
	ttl := g.cfg.Store.PresenceTTL
	if ttl <= 0 {
		ttl = proto.DefaultPresenceTTL
	}
	return &presence{g: g, log: g.log, ttl: ttl, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1), written: map[string]bool{}}
}

// markDirty asks for u's entry to be rewritten (or deleted).
func (p *presence) markDirty(u string) {
	p.mu.Lock()
	p.dirty[u] = struct{}{}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// presenceOf is u's aggregate on this gateway: known is false when no
// local socket of u has said updateClient (then there is no entry).
func (g *Gateway) presenceOf(u string) (known, active bool) {
	for _, s := range g.userSockets(u) {
		s.mu.Lock()
		if s.hasPresence && s.state < stateClosing {
			known = true
			active = active || s.active
		}
		s.mu.Unlock()
	}
	return known, active
}

func (p *presence) bind(ctx context.Context) error {
	if p.kv != nil {
		return nil
	}
	js, err := jetstream.New(p.g.nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.g.cfg.RequestTimeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, proto.BucketPresence)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, p.g.cfg.Store.PresenceBucket())
	}
	if err != nil {
		return err
	}
	p.kv = kv
	return nil
}

// run writes dirty entries as they come and refreshes all of them every
// third of the TTL, until done is closed; then it writes what is left dirty.
func (p *presence) run(done <-chan struct{}) {
	t := time.NewTicker(p.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-p.wake:
			p.writeDirty()
		case <-t.C:
			p.refresh()
		case <-done:
			p.writeDirty()
			return
		}
	}
}

func (p *presence) writeDirty() {
	p.mu.Lock()
	dirty := p.dirty
	p.dirty = map[string]struct{}{}
	p.mu.Unlock()
	if len(dirty) == 0 {
		return
	}
	ctx := context.Background()
	if err := p.bind(ctx); err != nil {
		p.log.Warn().Err(err).Msg("presence: bucket unavailable; will retry")
		p.mu.Lock()
		for u := range dirty {
			p.dirty[u] = struct{}{}
		}
		p.mu.Unlock()
		return
	}
	for u := range dirty {
		known, active := p.g.presenceOf(u)
		key := proto.PresenceKey(u, p.g.cfg.GatewayID)
		if !known {
			if _, had := p.written[u]; had {
				delete(p.written, u)
				if err := p.kv.Delete(ctx, key); err != nil {
					p.log.Warn().Err(err).Str("user", u).Msg("presence: delete failed; the entry will expire")
				}
			}
			continue
		}
		if err := p.put(ctx, key, active); err != nil {
			p.log.Warn().Err(err).Str("user", u).Msg("presence: write failed; will retry")
			p.markDirty(u)
			continue
		}
		p.written[u] = active
	}
}

func (p *presence) put(ctx context.Context, key string, active bool) error {
	b, _ := json.Marshal(proto.PresenceEntry{Active: active})
	ctx, cancel := context.WithTimeout(ctx, p.g.cfg.RequestTimeout)
	defer cancel()
	_, err := p.kv.Put(ctx, key, b)
	return err
}

func (p *presence) refresh() {
	if p.kv == nil {
		return
	}
	for u, active := range p.written {
		if err := p.put(context.Background(), proto.PresenceKey(u, p.g.cfg.GatewayID), active); err != nil {
			p.log.Warn().Err(err).Msg("presence: refresh failed")
			return
		}
	}
}

// maxPresenceUsers bounds one presence.get request.
const maxPresenceUsers = 1000

// addPresenceService serves presence.get from KV, on every gateway (micro's
// queue group spreads requests among them).
func (g *Gateway) addPresenceService() (micro.Service, error) {
	svc, err := micro.AddService(g.nc, micro.Config{Name: proto.ServicePresence, Version: "0.1.0",
		Description: "whether users are active on any gateway"})
	if err != nil {
		return nil, err
	}
	err = svc.AddEndpoint("get", micro.HandlerFunc(g.servePresenceGet), micro.WithEndpointSubject(proto.SubjectPresenceGet))
	if err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}

func (g *Gateway) servePresenceGet(req micro.Request) {
	fail := func(e *proto.Error) { _ = req.Error(string(e.Code), e.Message, nil) }
	// A read changes nothing: a panic is answered internal.
	defer g.guard.Recover("presence", func() { fail(proto.Errorf(proto.CodeInternal, "internal error")) })
	g.hook("presence")
	var args proto.PresenceArgs
	if err := json.Unmarshal(req.Data(), &args); err != nil {
		fail(proto.Errorf(proto.CodeInvalidArgument, "want {userIds:[…]}: %s", decodeError(err).Message))
		return
	}
	if len(args.UserIDs) > maxPresenceUsers {
		fail(proto.Errorf(proto.CodeInvalidArgument, "at most %d userIds per request", maxPresenceUsers))
		return
	}
	res := proto.PresenceResult{Active: make(map[string]bool, len(args.UserIDs))}
	keys := make([]string, 0, len(args.UserIDs))
	for _, u := range args.UserIDs {
		if err := proto.ValidateID(u); err != nil {
			fail(proto.Errorf(proto.CodeInvalidArgument, "userIds: %v", err))
			return
		}
		res.Active[u] = false
		keys = append(keys, proto.PresenceKey(u, "*"))
	}
	if len(keys) > 0 {
		if err := g.readPresence(keys, res.Active); err != nil {
			fail(proto.Errorf(proto.CodeUnavailable, "presence: %v", err))
			return
		}
	}
	_ = req.RespondJSON(res)
}

// readPresence reads every gateway's entry of the asked users in one watch
// (its initial values, then the end marker).
func (g *Gateway) readPresence(keys []string, active map[string]bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.RequestTimeout)
	defer cancel()
	js, err := jetstream.New(g.nc)
	if err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, proto.BucketPresence)
	if err != nil {
		return err
	}
	w, err := kv.WatchFiltered(ctx, keys, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return nil
			}
			var pe proto.PresenceEntry
			if json.Unmarshal(e.Value(), &pe) == nil && pe.Active {
				// Keys are <user>.<gateway>, and neither id holds a dot.
				if u, _, ok := strings.Cut(e.Key(), "."); ok {
					if _, asked := active[u]; asked {
						active[u] = true
					}
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
