package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// stamped is what the store needs of a resource type: to set its id and
// updatedAt from an event, and to read updatedAt back.
type stamped[T any] interface {
	*T
	stamp(id string, updatedAt int64)
	updated() int64
}

func (t *Task) stamp(id string, at int64) {
	t.ID, t.UpdatedAt = id, at
	if !slices.Contains(statuses, t.Status) {
		t.Status = statuses[0] // a task published without a column starts in "to do"
	}
}
func (t *Task) updated() int64 { return t.UpdatedAt }

func (s *Sprint) stamp(id string, at int64) { s.ID, s.UpdatedAt = id, at }
func (s *Sprint) updated() int64            { return s.UpdatedAt }

// applyEvent applies one stored event to a room's resources, the newest
// updatedAt winning: an event the store already has (its own API's) or one
// older than what it holds or deleted changes nothing. It reports whether
// the store changed.
func applyEvent[T any, P stamped[T]](r *resources[T], env proto.Envelope) bool {
	if at, ok := r.deleted[env.ID]; ok && at >= env.UpdatedAt {
		return false
	}
	cur, exists := r.items[env.ID]
	if exists && P(&cur).updated() >= env.UpdatedAt {
		return false
	}
	switch env.Event.Op() {
	case proto.OpCreate:
		var t T
		if json.Unmarshal(env.Data, &t) != nil {
			return false
		}
		P(&t).stamp(env.ID, env.UpdatedAt)
		r.items[env.ID] = t
	case proto.OpUpdate:
		if !exists || json.Unmarshal(env.Diff, &cur) != nil {
			return false // nothing to patch: the create never came
		}
		P(&cur).stamp(env.ID, env.UpdatedAt) // the diff's fields merged in, id and time the event's
		r.items[env.ID] = cur
	case proto.OpDelete:
		delete(r.items, env.ID)
		r.deleted[env.ID] = env.UpdatedAt
	default:
		return false
	}
	return true
}

// apply applies a stored message of the board's tasks or sprints room.
func (d *domain) apply(room proto.Room, data []byte) error {
	env, err := proto.ParseEnvelope(data)
	if err != nil {
		return err
	}
	if !env.Event.AllowedIn(room) {
		return fmt.Errorf("%s events do not go to %s", env.Event, room)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if env.UpdatedAt > d.last {
		d.last = env.UpdatedAt // the API's next change sorts after it
	}
	switch room.Kind() {
	case proto.KindBoardTasks:
		applyEvent(d.boardTasks(room.ID()), env)
	case proto.KindBoardSprints:
		applyEvent(d.boardSprints(room.ID()), env)
	}
	return nil
}

// consume reads the board's tasks and sprints rooms from stream ROOMS,
// from the start, and applies every event to the store until ctx ends:
// what others publish (roomcast publish, another instance) is the demo's
// data too.
func (d *domain) consume(ctx context.Context, js jetstream.JetStream, subjects proto.Subjects) error {
	tasks, err := proto.BoardTasksRoom(d.cfg.board)
	if err != nil {
		return err
	}
	sprints, err := proto.BoardSprintsRoom(d.cfg.board)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, proto.StreamRooms, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subjects.Publish(tasks), subjects.Publish(sprints)},
	})
	if err != nil {
		return fmt.Errorf("consume board %s: %w", d.cfg.board, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		room, err := subjects.RoomOf(m.Subject())
		if err == nil {
			err = d.apply(room, m.Data())
		}
		if err != nil {
			d.log.Warn().Err(err).Str("subject", m.Subject()).Msg("demo: skipped a stored event")
		}
	})
	if err != nil {
		return fmt.Errorf("consume board %s: %w", d.cfg.board, err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
