package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/roomcast/roomcast/proto"
)

// publishCommand: roomcast publish ROOM EVENT ID, validated by proto.
func publishCommand(out, errOut io.Writer) *cobra.Command {
	c := newOpsCmd(readsSubjects, out, errOut)
	var diff, data, msgID string
	var updatedAt int
	cmd := c.command(&cobra.Command{
		Use:   "publish ROOM EVENT ID",
		Short: "publish an event to a room, validated (the event must be allowed in the room)",
		Example: `  roomcast publish board-b1-tasks create-task t1 --data '{"title":"Write the README","status":"todo"}'
  roomcast publish board-b1-tasks update-task t1 --diff '{"status":"done"}'
  roomcast publish board-b1-tasks delete-task t1`,
		Args: usageArgs("ROOM EVENT ID", cobra.ExactArgs(3)),
		// EVENT completes to the events allowed in ROOM.
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) != 1 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			r, err := proto.ParseRoom(args[0])
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var events []cobra.Completion
			for _, e := range proto.Events {
				if e.AllowedIn(r) {
					events = append(events, string(e))
				}
			}
			return events, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.publishEvent(cmd.Context(), args, diff, data, msgID, updatedAt)
		},
	})
	cmd.Flags().StringVar(&diff, "diff", "", "changed fields, a JSON object (update events)")
	cmd.Flags().StringVar(&data, "data", "", "the whole resource or message, JSON (create events, new-message)")
	cmd.Flags().StringVar(&msgID, "msg-id", "", "Nats-Msg-Id (default: a hash of room and envelope)")
	cmd.Flags().IntVar(&updatedAt, "updated-at", 0, "updatedAt in ms since the Unix epoch (default: now)")
	return cmd
}

func (c *opsCmd) publishEvent(ctx context.Context, rest []string, diff, data, msgID string, updatedAt int) error {
	if err := c.ready(); err != nil {
		return err
	}
	r, err := room(rest[0])
	if err != nil {
		return err
	}
	env := proto.Envelope{Event: proto.Event(rest[1]), ID: rest[2], UpdatedAt: int64(updatedAt)}
	if env.UpdatedAt == 0 {
		env.UpdatedAt = time.Now().UnixMilli()
	}
	for _, f := range []struct {
		name, val string
		dst       *json.RawMessage
	}{{"--diff", diff, &env.Diff}, {"--data", data, &env.Data}} {
		if f.val == "" {
			continue
		}
		if !json.Valid([]byte(f.val)) {
			return usagef("%s is not valid JSON", f.name)
		}
		*f.dst = json.RawMessage(f.val)
	}
	var opts []proto.PublishOption
	if msgID != "" {
		opts = append(opts, proto.WithMsgID(msgID))
	}
	p := proto.NewPublisher(nil, c.subjects)
	if _, _, err := p.Encode(r, env, opts...); err != nil {
		return usageError{err}
	}
	if err := c.connect(); err != nil {
		return err
	}
	defer c.close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ack, err := proto.NewPublisher(c.js, c.subjects).Publish(ctx, r, env, opts...)
	if err != nil {
		return err
	}
	return c.printJSON(map[string]any{"room": r.Name(), "seq": ack.Sequence, "duplicate": ack.Duplicate})
}

// tailCommand: roomcast tail ROOM — live broadcasts as gateways receive them.
func tailCommand(out, errOut io.Writer) *cobra.Command {
	c := newOpsCmd(readsSubjects, out, errOut)
	var count int
	var user string
	cmd := c.command(&cobra.Command{
		Use:     "tail ROOM",
		Short:   "print live broadcasts as gateways receive them",
		Example: "  roomcast tail board-b1-tasks\n  roomcast tail board-b1-tasks --count 1\n  roomcast tail client-tab1 --user alice",
		Args:    usageArgs("ROOM", cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.tail(cmd.Context(), args[0], user, count)
		},
	})
	cmd.Flags().IntVar(&count, "count", 0, "stop after this many messages (0: until interrupted)")
	cmd.Flags().StringVar(&user, "user", "", "the user a client room belongs to (client rooms only: their subject names the tab's user)")
	return cmd
}

func (c *opsCmd) tail(ctx context.Context, name, user string, count int) error {
	r, err := c.readyRoom(name)
	if err != nil {
		return err
	}
	switch {
	case r.Kind() == proto.KindClient && user == "":
		return usagef("%s is a client room: give --user, the user whose tab it is", r)
	case r.Kind() == proto.KindClient:
		if r, err = r.WithOwner(user); err != nil {
			return usageError{err}
		}
	case user != "":
		return usagef("--user is for client rooms; %s is a %s room", r, r.Kind())
	}
	if err := c.connect(); err != nil {
		return err
	}
	defer c.close()
	msgs := make(chan *nats.Msg, 1024)
	sub, err := c.nc.ChanSubscribe(c.subjects.Live(r), msgs)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := c.nc.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.errOut, "tailing %s (%s)\n", r, c.subjects.Live(r))
	for n := 0; count == 0 || n < count; n++ {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			seq, _ := strconv.ParseUint(proto.StreamHeader(m.Header, jetstream.SequenceHeader), 10, 64)
			prev, _ := strconv.ParseUint(proto.StreamHeader(m.Header, jetstream.LastSequenceHeader), 10, 64)
			if err := c.printJSON(proto.Broadcast{Destination: r.Name(), Data: rawJSON(m.Data), Seq: seq, PrevSeq: prev}); err != nil {
				return err
			}
		}
	}
	return nil
}

// rawJSON passes valid JSON through and quotes anything else, so one bad
// message cannot break a JSON-lines output.
func rawJSON(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b))
	return q
}

// replayLine is one message of a replay, as printed.
type replayLine struct {
	Seq     uint64          `json:"seq"`
	Subject string          `json:"subject"`
	Time    int64           `json:"time"`
	MsgID   string          `json:"msgId,omitempty"`
	Data    json.RawMessage `json:"data"`
}

// replayOptions are replay's own flags.
type replayOptions struct {
	since, fromSeq, toSeq int
	toRoom                string
	rebroadcast, quiet    bool
}

// replayCommand: roomcast replay ROOM (--since | --from-seq) [--to-seq] [--to-room | --rebroadcast].
func replayCommand(out, errOut io.Writer) *cobra.Command {
	c := newOpsCmd(readsSubjects, out, errOut)
	var o replayOptions
	cmd := c.command(&cobra.Command{
		Use:   "replay ROOM (--since MS | --from-seq N) [--to-seq M] [--to-room ROOM | --rebroadcast]",
		Short: "read a room's history back: print it, copy it to another room, or send it to its clients again",
		Example: `  roomcast replay board-b1-tasks --from-seq 1200 --to-seq 1300
  roomcast replay board-b1-tasks --since 1764262800000 --rebroadcast
  roomcast replay board-b1-tasks --from-seq 1 --to-room board-b9-tasks`,
		Args: usageArgs("ROOM", cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.replay(cmd.Context(), args[0], o)
		},
	})
	f := cmd.Flags()
	f.IntVar(&o.since, "since", -1, "start at this stream time, ms since the Unix epoch")
	f.IntVar(&o.fromSeq, "from-seq", 0, "start at this stream sequence")
	f.IntVar(&o.toSeq, "to-seq", 0, "stop after this stream sequence (0: the room's last message)")
	f.StringVar(&o.toRoom, "to-room", "", "publish each message to this room instead of printing it")
	f.BoolVar(&o.rebroadcast, "rebroadcast", false, "send each message to the room's connected clients again (not stored again)")
	f.BoolVar(&o.quiet, "quiet", false, "no progress on stderr")
	return cmd
}

func (c *opsCmd) replay(ctx context.Context, name string, o replayOptions) error {
	since, fromSeq, toSeq, toRoom, rebroadcast, quiet := o.since, o.fromSeq, o.toSeq, o.toRoom, o.rebroadcast, o.quiet
	r, err := c.readyRoom(name)
	if err != nil {
		return err
	}
	if !r.Kind().Stored() {
		return usagef("%s is a client room: client rooms are not stored", r)
	}
	if (since >= 0) == (fromSeq > 0) {
		return usagef("give --since or --from-seq, one of them")
	}
	if toRoom != "" && rebroadcast {
		return usagef("give --to-room or --rebroadcast, not both")
	}
	var target proto.Room
	if toRoom != "" {
		if target, err = room(toRoom); err != nil {
			return err
		}
	}
	if err := c.connect(); err != nil {
		return err
	}
	defer c.close()

	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{c.subjects.Publish(r)},
		InactiveThreshold: 30 * time.Second,
	}
	if since >= 0 {
		t := time.UnixMilli(int64(since))
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	} else {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, uint64(fromSeq)
	}
	octx, cancel := context.WithTimeout(ctx, c.timeout)
	cons, err := c.js.OrderedConsumer(octx, proto.StreamRooms, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("replay %s: %w", r, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("replay %s: %w", r, err)
	}
	total := info.NumPending
	pub := proto.NewPublisher(c.js, c.subjects)
	var done uint64
	lastReport := time.Now()
	var prevSeq uint64
	for done < total {
		batch, err := cons.Fetch(int(min(total-done, 256)), jetstream.FetchMaxWait(c.timeout))
		if err != nil {
			return fmt.Errorf("replay %s: %w", r, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			done++
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			seq := meta.Sequence.Stream
			if toSeq > 0 && seq > uint64(toSeq) {
				total = done // past the range: stop
				break
			}
			line := replayLine{Seq: seq, Subject: m.Subject(), Time: meta.Timestamp.UnixMilli(), MsgID: m.Headers().Get(jetstream.MsgIDHeader), Data: rawJSON(m.Data())}
			switch {
			case rebroadcast:
				err = c.rebroadcast(r, m.Data(), seq, prevSeq)
			case !target.IsZero():
				err = c.republish(ctx, pub, target, line)
			default:
				err = c.printJSON(line)
			}
			if err != nil {
				return fmt.Errorf("replay %s at seq %d: %w", r, seq, err)
			}
			prevSeq = seq
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("replay %s: %w", r, err)
		}
		if got == 0 {
			return fmt.Errorf("replay %s: stream stopped delivering after %d of %d messages", r, done, total)
		}
		if !quiet && time.Since(lastReport) > time.Second {
			fmt.Fprintf(c.errOut, "replay %s: %d/%d\n", r, done, total)
			lastReport = time.Now()
		}
	}
	if !quiet {
		fmt.Fprintf(c.errOut, "replay %s: %d messages\n", r, done)
	}
	if rebroadcast {
		if err := c.nc.Flush(); err != nil {
			return err
		}
		// A refused publish is reported asynchronously, before the flush's
		// answer.
		if err := c.nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
			return fmt.Errorf("rebroadcast refused (%v): on a NATS with roomcast's roles only stream %s's RePublish may publish the rooms' live subjects; -to-room stores the messages again instead", err, proto.StreamRooms)
		}
	}
	return nil
}

// rebroadcast sends a stored message to the room's live subject, as the
// stream's RePublish did, with its original sequence. prevSeq is the
// previous replayed message's (0 for the first): a client whose last seq
// differs resyncs, which is what a rebroadcast is for.
func (c *opsCmd) rebroadcast(r proto.Room, data []byte, seq, prevSeq uint64) error {
	m := nats.NewMsg(c.subjects.Live(r))
	m.Data = data
	m.Header.Set(jetstream.SequenceHeader, strconv.FormatUint(seq, 10))
	m.Header.Set("Nats-Last-Sequence", strconv.FormatUint(prevSeq, 10))
	return c.nc.PublishMsg(m)
}

// republish stores a replayed envelope in another room. Its Nats-Msg-Id is
// derived from the original's and the target, so running the same replay
// twice within the duplicate window stores it once.
func (c *opsCmd) republish(ctx context.Context, pub *proto.Publisher, target proto.Room, line replayLine) error {
	env, err := proto.ParseEnvelope(line.Data)
	if err != nil {
		return err
	}
	id := line.MsgID
	if id == "" {
		id = strconv.FormatUint(line.Seq, 10)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err = pub.Publish(ctx, target, env, proto.WithMsgID(id+"@"+target.Name()))
	return err
}

// streamsCommand: roomcast streams ensure|info.
func streamsCommand(out, errOut io.Writer) *cobra.Command {
	c := newOpsCmd(readsStore, out, errOut)
	return c.command(&cobra.Command{
		Use:   "streams ensure|info",
		Short: "create or update stream ROOMS and the buckets (ensure), or show them (info)",
		Example: `  roomcast streams info
  roomcast streams ensure --replicas 3`,
		ValidArgs: []string{"ensure", "info"},
		Args:      usageArgs("ensure or info", cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.streams(cmd.Context(), args[0])
		},
	})
}

func (c *opsCmd) streams(ctx context.Context, what string) error {
	if err := c.ready(); err != nil {
		return err
	}
	if what != "ensure" && what != "info" {
		return usagef("want ensure or info, got %q", what)
	}
	if err := c.connect(); err != nil {
		return err
	}
	defer c.close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if what == "ensure" {
		if err := proto.Ensure(ctx, c.js, c.store); err != nil {
			return err
		}
	}
	s, err := c.js.Stream(ctx, proto.StreamRooms)
	if err != nil {
		return fmt.Errorf("stream %s: %w", proto.StreamRooms, err)
	}
	si := s.CachedInfo()
	buckets := map[string]any{}
	for _, b := range []string{proto.BucketRoomState, proto.BucketPresence, proto.BucketRevocations} {
		kv, err := c.js.KeyValue(ctx, b)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", b, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", b, err)
		}
		buckets[b] = map[string]any{"keys": st.Values(), "ttl": st.TTL().String(), "bytes": st.Bytes()}
	}
	stream := map[string]any{
		"name": si.Config.Name, "subjects": si.Config.Subjects, "replicas": si.Config.Replicas,
		"maxAge": si.Config.MaxAge.String(), "messages": si.State.Msgs, "bytes": si.State.Bytes,
		"firstSeq": si.State.FirstSeq, "lastSeq": si.State.LastSeq,
	}
	// Which node leads the stream and whether its followers are current:
	// what an operator looks at before and after a node fails.
	if cl := si.Cluster; cl != nil {
		followers := []map[string]any{}
		for _, r := range cl.Replicas {
			followers = append(followers, map[string]any{"name": r.Name, "current": r.Current})
		}
		stream["leader"], stream["followers"] = cl.Leader, followers
	}
	return c.printJSON(map[string]any{"stream": stream, "buckets": buckets})
}
