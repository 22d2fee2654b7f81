package roomstate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/roomcast/roomcast/process/panicguard"
	"github.com/roomcast/roomcast/proto"
)

const (
	// fetchWait is how long one pull request waits for messages; it also
	// bounds how long a stop takes to finish the pull in hand.
	fetchWait = time.Second
	// maxBatchBytes bounds what one pull buffers, whatever the batch size.
	maxBatchBytes = 16 << 20
	// writeTimeout bounds one batch's KV writes. It is detached from Run's
	// context so a stop lets the batch in hand finish and be acked.
	writeTimeout = 10 * time.Second
	// parallelWrites is how many rooms of one batch are written at once.
	parallelWrites = 16
	// retryDelay is how long a message whose write failed waits before it is
	// redelivered, and how long a broken consume waits before starting over.
	retryDelay = time.Second
	// lagPollInterval is how often the consumer's backlog is read from the
	// server, so lag_sequences also rises while nothing is delivered.
	lagPollInterval = 5 * time.Second
)

// consumer folds stream ROOMS into KV ROOM_STATE through a durable pull
// consumer shared by every replica.
type consumer struct {
	js       jetstream.JetStream
	config   jetstream.ConsumerConfig
	subjects proto.Subjects
	store    *stateStore
	batch    int
	wait     time.Duration
	m        *metrics
	log      zerolog.Logger
	running  chan struct{} // closed once the first pull is running (readiness)
	// guard stops a panic in the consume loop, in folding one message or in
	// writing one room: see docs/decisions.md.
	guard *panicguard.Guard
	hook  func(where string) // Config.panicHook (tests only)
}

// consumerConfig is the durable consumer every replica creates or updates to:
// explicit acks (a replica acks only what it wrote, so replicas never ack
// each other's messages), deliver everything, and room for a few batches per
// replica in flight.
func consumerConfig(cfg Config) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   "roomcast roomstate: folds every room message into KV " + proto.BucketRoomState,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 10 * cfg.BatchSize,
		MaxWaiting:    512,
		Replicas:      0, // the stream's
	}
}

// run consumes until ctx is done. A consume that breaks (consumer deleted,
// connection closed for a while) is started over after retryDelay.
func (c *consumer) run(ctx context.Context) error {
	go c.pollLag(ctx)
	for {
		var err error
		if c.guard.Do("loop", func() { err = c.consume(ctx) }) {
			// The messages in hand come back after AckWait.
			err = errors.New("the consume loop panicked")
		}
		if ctx.Err() != nil {
			return nil
		}
		c.log.Error().Err(err).Dur("retry_in", retryDelay).Msg("consuming stream " + proto.StreamRooms + " stopped; starting over")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryDelay):
		}
	}
}

func (c *consumer) consume(ctx context.Context) error {
	cons, err := c.js.CreateOrUpdateConsumer(ctx, proto.StreamRooms, c.config)
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", c.config.Durable, proto.StreamRooms, err)
	}
	select {
	case <-c.running:
	default:
		close(c.running)
	}
	// One pull request at a time, each a long poll for up to a batch. A
	// batch is read off the pull as messages arrive; what arrives while a
	// batch is being written waits in the pull for the next round. (The
	// Messages iterator was tried first: with two replicas and small batches
	// it over-requested and its buffer dropped messages as a slow consumer,
	// which then came back only after AckWait.)
	var (
		pull  jetstream.MessageBatch
		batch = make([]jetstream.Msg, 0, c.batch)
	)
	stopping := ctx.Done()
	for {
		if pull == nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pull, err = cons.Fetch(c.batch, jetstream.FetchMaxWait(fetchWait), jetstream.FetchMaxBytes(maxBatchBytes)); err != nil {
				return fmt.Errorf("pull from consumer %s: %w", c.config.Durable, err)
			}
		}
		// Wait for a first message; on stop, finish the pull in hand
		// (bounded by fetchWait) so nothing delivered is left unacked.
		var first jetstream.Msg
		select {
		case m, ok := <-pull.Messages():
			if !ok {
				err := pull.Error()
				pull = nil
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					return err
				}
				if err != nil && ctx.Err() == nil {
					c.log.Warn().Err(err).Msg("pull ended")
					select {
					case <-ctx.Done():
					case <-time.After(retryDelay / 10):
					}
				}
				continue
			}
			first = m
		case <-stopping:
			stopping = nil // keep draining the current pull
			continue
		}
		// Collect what arrives within BatchWait: under load the pull has a
		// backlog and the batch fills at once; a trickle waits at most
		// BatchWait.
		batch = append(batch[:0], first)
		timer := time.NewTimer(c.wait)
	collect:
		for len(batch) < c.batch {
			select {
			case m, ok := <-pull.Messages():
				if !ok {
					break collect // the next round reads the pull's end
				}
				batch = append(batch, m)
			case <-timer.C:
				break collect
			}
		}
		timer.Stop()
		if c.hook != nil {
			c.hook("loop")
		}
		c.process(ctx, batch)
	}
}

// roomBatch is one room's share of a batch: the merged state and the
// messages to ack once it is written.
type roomBatch struct {
	room  string
	state proto.RoomState
	msgs  []jetstream.Msg
	times []time.Time // stream timestamps of msgs
}

// process collapses batch per room, writes each room once, and acks each
// room's messages only after its write succeeded.
func (c *consumer) process(ctx context.Context, batch []jetstream.Msg) {
	c.m.batches.Inc()
	rooms := make(map[string]*roomBatch)
	order := make([]*roomBatch, 0)
	pending := uint64(0)
	for _, msg := range batch {
		if c.guard.Do("fold", func() { order = c.fold(msg, rooms, order, &pending) }) {
			// Nothing of msg was folded; it would panic again if it came
			// back, so it is terminated (counted in panics_total).
			_ = msg.Term()
		}
	}

	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	var g errgroup.Group
	g.SetLimit(parallelWrites)
	for _, rb := range order {
		g.Go(func() error {
			// The room's state is one KV write, made or not; its messages
			// are terminated (not redelivered for ever) and the room's
			// state waits for its next message.
			defer c.guard.Recover("write", func() {
				for _, msg := range rb.msgs {
					_ = msg.Term()
				}
			})
			if c.hook != nil {
				c.hook("write")
			}
			c.write(wctx, rb)
			return nil
		})
	}
	_ = g.Wait()
	c.m.lagSeqs.Set(float64(pending))
}

// fold adds msg to its room's share of the batch (rooms, and order, which
// it returns), or skips it. Everything is computed before anything is
// added, so a panic part-way folds nothing of msg.
func (c *consumer) fold(msg jetstream.Msg, rooms map[string]*roomBatch, order []*roomBatch, pending *uint64) []*roomBatch {
	meta, err := msg.Metadata()
	if err != nil {
		c.skip(msg, 0, skipMetadata, err)
		return order
	}
	*pending = meta.NumPending
	seq := meta.Sequence.Stream
	// The gate the gateway and sync apply too, against the store time:
	// what no client received live is not folded in.
	room, env, err := c.subjects.CheckSubject(msg.Subject(), msg.Data(), meta.Timestamp)
	if err == nil && !room.Kind().Stored() {
		err = &proto.RefusedError{Reason: proto.ReasonSubject, Detail: fmt.Sprintf("%s rooms are never stored", room.Kind())}
	}
	if err != nil {
		c.refuse(msg, seq, err)
		return order
	}
	if c.hook != nil {
		c.hook("fold")
	}
	rb := rooms[room.Name()]
	var state proto.RoomState
	if rb != nil {
		state = rb.state
	}
	state = mergeState(state, proto.RoomState{LastBroadcastTimestamp: env.UpdatedAt, Seq: seq})
	if rb == nil {
		rb = &roomBatch{room: room.Name()}
		rooms[room.Name()] = rb
		order = append(order, rb)
	}
	rb.state = state
	rb.msgs = append(rb.msgs, msg)
	rb.times = append(rb.times, meta.Timestamp)
	return order
}

func (c *consumer) write(ctx context.Context, rb *roomBatch) {
	if _, err := c.store.Merge(ctx, rb.room, rb.state); err != nil {
		c.m.writeErrors.Inc()
		c.log.Error().Err(err).Str("room", rb.room).Int("messages", len(rb.msgs)).Msg("room state write failed; messages will be redelivered")
		for _, msg := range rb.msgs {
			_ = msg.NakWithDelay(retryDelay)
		}
		return
	}
	now := time.Now()
	for i, msg := range rb.msgs {
		// A lost ack only means a redelivery, which the merge absorbs.
		_ = msg.Ack()
		c.m.lagSeconds.Observe(now.Sub(rb.times[i]).Seconds())
	}
	c.m.processed.Add(float64(len(rb.msgs)))
}

// skip terminates a message that can never be folded in, so it neither
// blocks the consumer nor comes back.
func (c *consumer) skip(msg jetstream.Msg, seq uint64, reason string, err error) {
	c.m.skipped.WithLabelValues(reason).Inc()
	c.log.Warn().Err(err).Uint64("seq", seq).Str("subject", msg.Subject()).Str("reason", reason).Msg("skipping message")
	_ = msg.Term()
}

// refuse terminates a message the envelope gate refused: it can never be
// folded in, so it neither blocks the consumer nor comes back.
func (c *consumer) refuse(msg jetstream.Msg, seq uint64, err error) {
	reason := proto.ReasonOf(err)
	c.m.refused.WithLabelValues(string(reason)).Inc()
	c.log.Warn().Err(err).Uint64("seq", seq).Str("subject", msg.Subject()).Str("reason", string(reason)).Msg("refused a room message")
	_ = msg.Term()
}

// pollLag refreshes lag_sequences from the server: messages not delivered yet
// plus delivered and not acked, across every replica. Between polls each
// batch sets it from its last message's pending count.
func (c *consumer) pollLag(ctx context.Context) {
	t := time.NewTicker(lagPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		qctx, cancel := context.WithTimeout(ctx, lagPollInterval)
		cons, err := c.js.Consumer(qctx, proto.StreamRooms, c.config.Durable)
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = cons.Info(qctx); err == nil {
				c.m.lagSeqs.Set(float64(info.NumPending) + float64(info.NumAckPending))
			}
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			c.log.Debug().Err(err).Msg("read consumer backlog")
		}
	}
}
