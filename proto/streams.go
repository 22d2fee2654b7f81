package proto

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream names.
const (
	StreamRooms     = "ROOMS"
	BucketRoomState = "ROOM_STATE"
	BucketPresence  = "PRESENCE"
	// BucketRevocations keeps each user's last revoke: key = user id,
	// value = Revocation as JSON, for MaxTokenLifetime.
	BucketRevocations = "REVOCATIONS"
	// BucketSessions keeps the sessions a client may recover (connection
	// state recovery): key = the session's pid, value = the gateway's
	// record of it, written when its socket is cut, for SessionTTL.
	BucketSessions = "SESSIONS"
)

// Defaults of StoreConfig.
const (
	DefaultMaxAge            = 30 * 24 * time.Hour
	DefaultDuplicateWindow   = 2 * time.Minute
	DefaultPresenceTTL       = 30 * time.Second
	DefaultReplicas          = 1
	DefaultMaxRoomsStreamMsg = MaxEnvelopeSize
	DefaultMaxTokenLifetime  = 24 * time.Hour
	// DefaultSessionTTL is how long a cut session can be recovered:
	// Socket.IO's own window is two minutes (maxDisconnectionDuration);
	// five leave room for a gateway's restart and the client's backoff.
	DefaultSessionTTL = 5 * time.Minute
)

// StoreConfig shapes stream ROOMS and the KV buckets. Zero values mean the
// documented defaults.
type StoreConfig struct {
	// Subjects is the room subject mapping (prefix "rooms" by default).
	Subjects Subjects
	// Replicas of the stream and buckets: 1 embedded (default), 3 in a cluster.
	Replicas int
	// MaxAge is how long ROOMS keeps messages, and ROOM_STATE a room's state
	// after its last broadcast. Default 30 days.
	MaxAge time.Duration
	// PresenceTTL is how long a gateway's presence entry lives unless
	// refreshed; a dead gateway's entries are gone after it. Default 30 s.
	PresenceTTL time.Duration
	// MaxTokenLifetime is the longest a token may live (exp − iat, or exp −
	// now without an iat): gateways refuse longer-lived tokens, and
	// REVOCATIONS keeps each revoke this long, so every token a revoke
	// refuses has expired before its record goes. Default 24 h.
	MaxTokenLifetime time.Duration
	// SessionTTL is how long SESSIONS keeps a cut session's record: how
	// long after a cut a client can come back recovered. Default 5 min.
	SessionTTL time.Duration
}

func (c StoreConfig) withDefaults() StoreConfig {
	if c.Replicas <= 0 {
		c.Replicas = DefaultReplicas
	}
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.PresenceTTL <= 0 {
		c.PresenceTTL = DefaultPresenceTTL
	}
	if c.MaxTokenLifetime <= 0 {
		c.MaxTokenLifetime = DefaultMaxTokenLifetime
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	return c
}

// RoomsStream is the configuration of stream ROOMS: every stored room
// subject, file storage, a duplicate window for Nats-Msg-Id, and RePublish of
// every stored message to live.<subject> with its sequence headers. The
// duplicate window is capped at MaxAge, which nats-server requires (a MaxAge
// under two minutes would otherwise be refused).
func (c StoreConfig) RoomsStream() jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:        StreamRooms,
		Description: "roomcast: every event published to a room, re-published to live.> once stored",
		Subjects:    c.Subjects.StreamSubjects(),
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		MaxMsgSize:  DefaultMaxRoomsStreamMsg,
		Duplicates:  min(DefaultDuplicateWindow, c.MaxAge),
		Replicas:    c.Replicas,
		AllowDirect: true,
		RePublish: &jetstream.RePublish{
			Source:      ">",
			Destination: LivePrefix + ".>",
		},
	}
}

// RoomStateBucket is the configuration of KV ROOM_STATE: key = room name,
// value = RoomState as JSON.
func (c StoreConfig) RoomStateBucket() jetstream.KeyValueConfig {
	c = c.withDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      BucketRoomState,
		Description: "roomcast: each room's lastBroadcastTimestamp and latest seq",
		History:     1,
		TTL:         c.MaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}
}

// PresenceBucket is the configuration of KV PRESENCE: key PresenceKey(user,
// gateway), value PresenceEntry as JSON, expiring after PresenceTTL.
func (c StoreConfig) PresenceBucket() jetstream.KeyValueConfig {
	c = c.withDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      BucketPresence,
		Description: "roomcast: per gateway, whether each connected user is active",
		History:     1,
		TTL:         c.PresenceTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}
}

// RevocationsBucket is the configuration of KV REVOCATIONS: key = user id,
// value = Revocation as JSON; an entry lives MaxTokenLifetime after its
// last write.
func (c StoreConfig) RevocationsBucket() jetstream.KeyValueConfig {
	c = c.withDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      BucketRevocations,
		Description: "roomcast: each user's last revoke; tokens issued at or before it are refused",
		History:     1,
		TTL:         c.MaxTokenLifetime,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}
}

// SessionsBucket is the configuration of KV SESSIONS: key = pid, value =
// the gateway's record of a cut session (its own format, JSON), expiring
// SessionTTL after it was written.
func (c StoreConfig) SessionsBucket() jetstream.KeyValueConfig {
	c = c.withDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      BucketSessions,
		Description: "roomcast: cut sessions a client may recover, by pid",
		History:     1,
		TTL:         c.SessionTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}
}

// Revocation is a REVOCATIONS value, and the optional body of a revoke
// (RevokeSubject): when the user's tokens stopped being valid, in
// milliseconds since the Unix epoch. A token of the user issued (iat) at or
// before it is refused.
type Revocation struct {
	RevokedAt int64 `json:"revokedAt"`
}

// ParseRevocation reads a Revocation; ok is false unless data is one with
// a positive revokedAt.
func ParseRevocation(data []byte) (r Revocation, ok bool) {
	if json.Unmarshal(data, &r) != nil || r.RevokedAt <= 0 {
		return Revocation{}, false
	}
	return r, true
}

// RecordRevocation writes user u's revoke at time at into REVOCATIONS. It
// is idempotent: every gateway that hears a revoke writes it, and so does
// `roomcast revoke`, so the record exists whoever is running.
func RecordRevocation(ctx context.Context, kv jetstream.KeyValue, u string, at time.Time) error {
	if err := ValidateID(u); err != nil {
		return err
	}
	b, _ := json.Marshal(Revocation{RevokedAt: at.UnixMilli()})
	if _, err := kv.Put(ctx, u, b); err != nil {
		return fmt.Errorf("record the revoke of %s in %s: %w", u, BucketRevocations, err)
	}
	return nil
}

// PresenceKey is the PRESENCE key of user u as seen by one gateway. Both are
// validated ids, so the key is a valid KV key.
func PresenceKey(u, gateway string) string { return u + "." + gateway }

// PresenceEntry is a PRESENCE value.
type PresenceEntry struct {
	Active bool `json:"active"`
}

// Ensure creates stream ROOMS and the buckets ROOM_STATE, PRESENCE,
// REVOCATIONS and SESSIONS, or updates them to c. It is idempotent: every service may
// call it at start.
func Ensure(ctx context.Context, js jetstream.JetStream, c StoreConfig) error {
	if _, err := js.CreateOrUpdateStream(ctx, c.RoomsStream()); err != nil {
		return fmt.Errorf("ensure stream %s: %w", StreamRooms, err)
	}
	for _, b := range []jetstream.KeyValueConfig{c.RoomStateBucket(), c.PresenceBucket(), c.RevocationsBucket(), c.SessionsBucket()} {
		if _, err := js.CreateOrUpdateKeyValue(ctx, b); err != nil {
			return fmt.Errorf("ensure bucket %s: %w", b.Bucket, err)
		}
	}
	return nil
}

// StreamHeader is the value the server set for key (jetstream.SequenceHeader,
// LastSequenceHeader, SubjectHeader, TimeStampHeaer) on a message the stream
// re-published or a direct get returned: the last one. The server appends
// its headers to the publisher's own, so a publisher that set
// Nats-Sequence itself leaves a forged first value, which Header.Get would
// return; "" when there is none.
func StreamHeader(h nats.Header, key string) string {
	vs := h.Values(key)
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// DirectGetSubject is where a stream's direct gets are asked
// ($JS.API.DIRECT.GET.<stream>): any replica that allows direct gets answers,
// batched reads included (proto/directget).
func DirectGetSubject(stream string) string {
	return jetstream.DefaultAPIPrefix + "DIRECT.GET." + stream
}

// MsgGetSubject is where a stream's leader is asked for one message
// ($JS.API.STREAM.MSG.GET.<stream>): only the leader answers, so what it
// says is the stream's state, where a direct get may come from a follower
// that lags.
func MsgGetSubject(stream string) string {
	return jetstream.DefaultAPIPrefix + "STREAM.MSG.GET." + stream
}

// KVStream is the stream that holds KV bucket's values.
func KVStream(bucket string) string { return "KV_" + bucket }

// KVSubject is the subject KV bucket stores key under, in KVStream(bucket).
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }
