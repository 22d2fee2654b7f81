package gateway

import (
	"encoding/json"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/roomcast/proto"
)

// subscribeControl listens for kicks and revocations from domain services.
// Every gateway gets every one (no queue group): each acts on its own
// sockets. These are two subscriptions per gateway, so a callback (one
// goroutine each) is fine here.
func (g *Gateway) subscribeControl() ([]*nats.Subscription, error) {
	kick, err := g.nc.Subscribe(proto.SubjectKick, g.onKick)
	if err != nil {
		return nil, err
	}
	revoke, err := g.nc.Subscribe(proto.SubjectRevokeAll, g.onRevoke)
	if err != nil {
		_ = kick.Unsubscribe()
		return nil, err
	}
	return []*nats.Subscription{kick, revoke}, nil
}

// onKick takes a user's sockets out of a room (a membership was removed)
// and drops the cached permission.
func (g *Gateway) onKick(m *nats.Msg) {
	user := ""
	defer g.guard.Recover("kick", func() {
		if user != "" {
			g.failClosed(user, false)
		}
	})
	var k proto.KickRequest
	if err := json.Unmarshal(m.Data, &k); err != nil || proto.ValidateID(k.UserID) != nil {
		g.log.Warn().Str("subject", m.Subject).Msg("ignored a kick that is not {roomName, userId}")
		return
	}
	r, err := proto.ParseRoom(k.RoomName)
	if err != nil {
		g.log.Warn().Err(err).Msg("ignored a kick with a bad room name")
		return
	}
	user = k.UserID
	g.hook("kick")
	g.authz.forget(k.UserID, r)
	n := 0
	for _, s := range g.userSockets(k.UserID) {
		if s.inRoom(r.Parent().Key()) {
			g.leave(s, r)
			n++
		}
	}
	g.log.Info().Str("user", k.UserID).Str("room", r.Name()).Int("sockets", n).Msg("kicked")
}

// onRevoke is in revocations.go.

// failClosed ends user u's sockets after a kick or a revoke panicked
// part-way, so that none keeps a room or a session it should have lost:
// the user's cached authorizations go, and every socket of the user is
// closed, with a Socket.IO DISCONNECT when the user was being revoked (the
// stock client then does not reconnect), else with a transport close (it
// reconnects and joins again, asking the authorizer).
func (g *Gateway) failClosed(u string, revoked bool) {
	g.authz.forgetUser(u)
	for _, s := range g.userSockets(u) {
		if revoked {
			s.closeWith("revoked", disconnectFrame, normalCloseFrm)
		} else {
			s.close("a kick failed part-way")
		}
	}
}

// hook is Config.panicHook (tests only).
func (g *Gateway) hook(where string) {
	if g.cfg.panicHook != nil {
		g.cfg.panicHook(where)
	}
}
