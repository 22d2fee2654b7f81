package proto

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher publishes envelopes to rooms for a domain service: it checks the
// event may go to the room, validates the envelope, refuses what the
// services' gate would (CheckEnvelope, with this host's clock), sets Nats-Msg-Id so a
// retried publish is stored once, and waits for the stream's ack.
type Publisher struct {
	js       jetstream.JetStream
	subjects Subjects
}

// NewPublisher publishes through js under the subject mapping s.
func NewPublisher(js jetstream.JetStream, s Subjects) *Publisher {
	return &Publisher{js: js, subjects: s}
}

// PublishOption changes one publish.
type PublishOption func(*publishOpts)

type publishOpts struct{ msgID string }

// WithMsgID sets Nats-Msg-Id instead of the default, a hash of the room and
// the envelope's bytes (identical retries are stored once; two different
// changes at the same millisecond are both kept).
func WithMsgID(id string) PublishOption { return func(o *publishOpts) { o.msgID = id } }

// Publish stores env in stream ROOMS under room's subject; connected members
// receive it once stored. It returns the stream's ack (its Sequence is the
// broadcast's seq; Duplicate is true when an earlier identical publish was
// already stored).
func (p *Publisher) Publish(ctx context.Context, room Room, env Envelope, opts ...PublishOption) (*jetstream.PubAck, error) {
	data, msgID, err := p.Encode(room, env, opts...)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(p.subjects.Publish(room))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	ack, err := p.js.PublishMsg(ctx, msg)
	if err != nil {
		return nil, fmt.Errorf("publish %s to %s: %w", env.Event, room, err)
	}
	return ack, nil
}

// Encode validates env for room and returns the bytes Publish would send and
// their Nats-Msg-Id.
func (p *Publisher) Encode(room Room, env Envelope, opts ...PublishOption) ([]byte, string, error) {
	if room.IsZero() {
		return nil, "", fmt.Errorf("publish %s: no room", env.Event)
	}
	if !room.Kind().Stored() {
		return nil, "", fmt.Errorf("publish %s to %s: client rooms are not stored; publish to their live subject", env.Event, room)
	}
	if err := env.Validate(); err != nil {
		return nil, "", err
	}
	if !env.Event.AllowedIn(room) {
		return nil, "", fmt.Errorf("publish %s to %s: %s events go to %v rooms", env.Event, room, env.Event, env.Event.RoomKinds())
	}
	data, err := json.Marshal(env)
	if err != nil {
		return nil, "", fmt.Errorf("publish %s to %s: %w", env.Event, room, err)
	}
	// The gate every service applies, with this host's clock for the store
	// time: what it refuses would be stored and then ignored everywhere.
	if _, err := CheckEnvelope(room, data, time.Now()); err != nil {
		return nil, "", fmt.Errorf("publish %s to %s: %w", env.Event, room, err)
	}
	var o publishOpts
	for _, opt := range opts {
		opt(&o)
	}
	if o.msgID == "" {
		h := sha256.New()
		h.Write([]byte(room.Name()))
		h.Write([]byte{0})
		h.Write(data)
		o.msgID = base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
	}
	return data, o.msgID, nil
}
