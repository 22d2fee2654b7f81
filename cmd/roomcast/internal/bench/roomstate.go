package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/roomstate"
)

// modeRoomstate measures roomstate alone, with flags of its own: how long a
// published event takes to show in KV ROOM_STATE.
const modeRoomstate = "roomstate"

const roomstateUsage = `usage: roomcast bench roomstate [flags]

Publishes at a fixed rate to a set of rooms (board-lagN-tasks), watches KV
ROOM_STATE, and reports the publish -> KV-visible lag (p50, p90, p99, max) and
how many KV writes the events cost. By default it runs its own in-process
nats-server and roomstate service; -nats measures a running system instead
(its roomstate must be running).

flags:`

type roomstateOptions struct {
	nats      string
	rate      int
	duration  time.Duration
	rooms     int
	batchWait time.Duration
}

// runRoomstate is "roomcast bench roomstate".
func runRoomstate(ctx context.Context, args []string, out, errOut io.Writer) error {
	var o roomstateOptions
	fs := flag.NewFlagSet("bench roomstate", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() { fmt.Fprintln(errOut, roomstateUsage); fs.PrintDefaults() }
	fs.StringVar(&o.nats, "nats", "", "measure this NATS (with roomstate running) instead of an in-process one")
	fs.IntVar(&o.rate, "rate", 1000, "events per second")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to publish")
	fs.IntVar(&o.rooms, "rooms", 100, "rooms to spread the events over (board-lagN-tasks)")
	fs.DurationVar(&o.batchWait, "batch-wait", 0, "roomstate BatchWait for the in-process service (0: its default)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return proto.Errorf(proto.CodeInvalidArgument, "%v", err)
	}
	switch {
	case fs.NArg() > 0:
		return proto.Errorf(proto.CodeInvalidArgument, "bench roomstate takes flags only, not %q", fs.Args())
	case o.rate < 1, o.rooms < 1, o.duration <= 0, o.batchWait < 0:
		return proto.Errorf(proto.CodeInvalidArgument, "bench roomstate: -rate, -rooms and -duration must be positive, -batch-wait not negative")
	}
	return measureRoomstate(ctx, o, out)
}

func measureRoomstate(ctx context.Context, o roomstateOptions, out io.Writer) error {
	reg := prometheus.NewRegistry()
	url := o.nats
	if url == "" {
		dir, err := os.MkdirTemp("", "roomstate-lag-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true})
		if err != nil {
			return err
		}
		s.Start()
		defer s.Shutdown()
		if !s.ReadyForConnections(10 * time.Second) {
			return errors.New("embedded nats-server not ready")
		}
		url = s.ClientURL()
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			done <- roomstate.Run(sctx, roomstate.Config{NATSURL: url, BatchWait: o.batchWait, Logger: zerolog.New(os.Stderr).Level(zerolog.WarnLevel), Registry: reg})
		}()
		defer func() { cancel(); <-done }()
	}

	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*(o.rate)))
	if err != nil {
		return err
	}
	if err := proto.Ensure(ctx, js, proto.StoreConfig{}); err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, proto.BucketRoomState)
	if err != nil {
		return err
	}
	pub := proto.NewPublisher(js, proto.Subjects{})
	targets := make([]proto.Room, o.rooms)
	for i := range targets {
		if targets[i], err = proto.BoardTasksRoom(fmt.Sprintf("lag%d", i)); err != nil {
			return err
		}
	}

	// sent[room] is the events published to room not yet seen in KV, in
	// updatedAt order; a KV update with timestamp T makes every one <= T
	// visible.
	type event struct {
		updatedAt int64
		at        time.Time
	}
	var (
		mu    sync.Mutex
		sent  = make(map[string][]event)
		lags  []time.Duration
		total int
	)
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	defer w.Stop()
	go func() {
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			now := time.Now()
			var st proto.RoomState
			if json.Unmarshal(e.Value(), &st) != nil {
				continue
			}
			mu.Lock()
			q := sent[e.Key()]
			n := 0
			for n < len(q) && q[n].updatedAt <= st.LastBroadcastTimestamp {
				lags = append(lags, now.Sub(q[n].at))
				n++
			}
			sent[e.Key()] = q[n:]
			mu.Unlock()
		}
	}()

	// updatedAt: now, in milliseconds, and above the last one, so that each
	// event's is unique and increasing (the gate refuses one much ahead of
	// its store time).
	var updatedAt int64
	interval := time.Second / time.Duration(o.rate)
	start := time.Now()
	n := int(o.duration.Seconds() * float64(o.rate))
	fmt.Fprintf(out, "publishing %d events at %d/s to %d rooms for %s\n", n, o.rate, o.rooms, o.duration)
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
		room := targets[i%len(targets)]
		updatedAt = max(time.Now().UnixMilli(), updatedAt+1)
		env := proto.Envelope{Event: proto.EventUpdateTask, ID: fmt.Sprintf("t%d", i), UpdatedAt: updatedAt, Diff: json.RawMessage(`{"n":1}`)}
		data, msgID, err := pub.Encode(room, env)
		if err != nil {
			return err
		}
		msg := nats.NewMsg(proto.Subjects{}.Publish(room))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
		mu.Lock()
		sent[room.Name()] = append(sent[room.Name()], event{updatedAt: env.UpdatedAt, at: time.Now()})
		total++
		mu.Unlock()
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return err
		}
	}
	elapsed := time.Since(start)
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		seen := len(lags)
		mu.Unlock()
		if seen == total || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lags) == 0 {
		return errors.New("no event reached KV")
	}
	slices.Sort(lags)
	q := func(p float64) time.Duration { return lags[min(len(lags)-1, int(p*float64(len(lags))))] }
	fmt.Fprintf(out, "published %d in %s (%.0f/s); seen in KV: %d\n", total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), len(lags))
	fmt.Fprintf(out, "publish -> KV visible lag: p50 %s  p90 %s  p99 %s  max %s\n", q(.50).Round(10*time.Microsecond), q(.90).Round(10*time.Microsecond), q(.99).Round(10*time.Microsecond), lags[len(lags)-1].Round(10*time.Microsecond))
	if o.nats == "" {
		writes, batches := counterValue(reg, "roomcast_roomstate_kv_writes_total"), counterValue(reg, "roomcast_roomstate_batches_total")
		fmt.Fprintf(out, "roomstate: %.0f KV writes in %.0f batches for %d events (%.1f events per write)\n", writes, batches, total, float64(total)/writes)
	}
	return nil
}

// counterValue is the value of the counter name in reg (0 if absent).
func counterValue(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
