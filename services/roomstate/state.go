package roomstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
)

// maxCASAttempts bounds the read-merge-write loop of one room write. Each
// conflict means another writer moved the key, so a handful is plenty even
// with several replicas.
const maxCASAttempts = 10

// maxCachedRooms bounds the revision cache; past it the cache starts over
// (a miss costs one KV read, nothing else).
const maxCachedRooms = 100_000

// errBadValue marks a stored value that is not a RoomState.
var errBadValue = errors.New("room state does not decode")

// mergeState is the room state that holds both a and b: the larger
// timestamp and the larger sequence. It is commutative, associative and
// idempotent, which is why duplicates, out-of-order deliveries and two
// replicas writing the same room can never move a room backwards.
func mergeState(a, b proto.RoomState) proto.RoomState {
	return proto.RoomState{
		LastBroadcastTimestamp: max(a.LastBroadcastTimestamp, b.LastBroadcastTimestamp),
		Seq:                    max(a.Seq, b.Seq),
	}
}

// stateStore reads and merges room states in KV ROOM_STATE. It remembers the
// revision it last wrote per room so a write is usually one compare-and-set,
// with no read before it; a stale revision only costs a conflict and a read.
type stateStore struct {
	kv jetstream.KeyValue
	nc *nats.Conn // for GetMany's batched reads; nil: key by key
	// multi pauses the batched reads after one went unanswered (GetMany);
	// firstReply and retryMin are multiFirstReply and multiRetryMin (tests
	// shorten them).
	multi      multiPause
	firstReply time.Duration
	retryMin   time.Duration
	m          *metrics
	log        zerolog.Logger

	mu    sync.Mutex
	cache map[string]revState
}

type revState struct {
	rev   uint64
	state proto.RoomState
}

func newStateStore(kv jetstream.KeyValue, m *metrics, log zerolog.Logger) *stateStore {
	return &stateStore{kv: kv, m: m, log: log, cache: make(map[string]revState), firstReply: multiFirstReply, retryMin: multiRetryMin}
}

// Get reads room's state from KV; nil when it has none (never broadcast to,
// or expired).
func (s *stateStore) Get(ctx context.Context, room string) (*proto.RoomState, error) {
	e, err := s.kv.Get(ctx, room)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st proto.RoomState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, fmt.Errorf("%w: %s %s revision %d: %v", errBadValue, proto.BucketRoomState, room, e.Revision(), err)
	}
	return &st, nil
}

// Merge folds upd into room's state with compare-and-set, retrying on
// conflicts. It reports whether it wrote (a state that already holds upd is
// left alone).
func (s *stateStore) Merge(ctx context.Context, room string, upd proto.RoomState) (bool, error) {
	cur, known := s.cached(room)
	for attempt := 1; ; attempt++ {
		if !known {
			var err error
			if cur, err = s.read(ctx, room); err != nil {
				return false, err
			}
			known = true
		}
		next := mergeState(cur.state, upd)
		if cur.rev != 0 && next == cur.state {
			return false, nil
		}
		data, err := json.Marshal(next)
		if err != nil {
			return false, err
		}
		var rev uint64
		if cur.rev == 0 {
			rev, err = s.kv.Create(ctx, room, data)
		} else {
			rev, err = s.kv.Update(ctx, room, data, cur.rev)
		}
		if err == nil {
			s.remember(room, revState{rev: rev, state: next})
			s.m.writes.Inc()
			return true, nil
		}
		s.forget(room)
		if !isConflict(err) {
			return false, err
		}
		s.m.conflicts.Inc()
		if attempt >= maxCASAttempts {
			return false, fmt.Errorf("%s %s: still conflicting after %d attempts: %w", proto.BucketRoomState, room, attempt, err)
		}
		known = false
	}
}

// read is room's current revision and state; revision 0 when it has none. A
// value that does not decode is logged and treated as empty, so the next
// write repairs it instead of the consumer stalling on it forever.
func (s *stateStore) read(ctx context.Context, room string) (revState, error) {
	e, err := s.kv.Get(ctx, room)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return revState{}, nil
	}
	if err != nil {
		return revState{}, fmt.Errorf("read %s %s: %w", proto.BucketRoomState, room, err)
	}
	var st proto.RoomState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		s.log.Warn().Err(err).Str("room", room).Uint64("revision", e.Revision()).Msg("room state does not decode; overwriting it")
		st = proto.RoomState{}
	}
	return revState{rev: e.Revision(), state: st}, nil
}

func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

func (s *stateStore) cached(room string) (revState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.cache[room]
	return c, ok
}

func (s *stateStore) remember(room string, c revState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) >= maxCachedRooms {
		clear(s.cache)
	}
	s.cache[room] = c
}

func (s *stateStore) forget(room string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cache, room)
}
