package roomstate

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

const waitFor = 20 * time.Second

// stack is a nats-server with stream ROOMS and the buckets, and a client.
type stack struct {
	s     *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	pub   *proto.Publisher
	store proto.StoreConfig
}

func newStack(t *testing.T, store proto.StoreConfig) *stack {
	t.Helper()
	s, nc, js := natstest.RunStack(t, store)
	kv, err := js.KeyValue(context.Background(), proto.BucketRoomState)
	require.NoError(t, err)
	return &stack{s: s, nc: nc, js: js, kv: kv, pub: proto.NewPublisher(js, store.Subjects), store: store}
}

// replica is one running roomstate service.
type replica struct {
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func (st *stack) start(t *testing.T, mod func(*Config)) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{reg: prometheus.NewRegistry(), cancel: cancel, done: make(chan error, 1)}
	cfg := Config{
		NATSURL:  st.s.ClientURL(),
		Store:    st.store,
		Logger:   zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		Registry: r.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	go func() { r.done <- Run(ctx, cfg) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the replica and waits for Run to return; idempotent.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	if r.done == nil {
		return
	}
	r.cancel()
	select {
	case err := <-r.done:
		require.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("roomstate did not stop")
	}
	r.done = nil
}

// metric sums the samples of the metric called name whose labels include
// labels.
func (r *replica) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				ok := false
				for _, l := range m.GetLabel() {
					ok = ok || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
				}
				if !ok {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// envelope is a valid envelope for room with the given timestamp.
func envelope(room proto.Room, id string, updatedAt int64) proto.Envelope {
	switch room.Kind() {
	case proto.KindUser:
		return proto.Envelope{Event: proto.EventUpdateUser, ID: id, UpdatedAt: updatedAt, Diff: json.RawMessage(`{"name":"x"}`)}
	case proto.KindOrg:
		return proto.Envelope{Event: proto.EventUpdateOrganization, ID: id, UpdatedAt: updatedAt, Diff: json.RawMessage(`{"name":"x"}`)}
	case proto.KindBoard:
		return proto.Envelope{Event: proto.EventUpdateBoard, ID: id, UpdatedAt: updatedAt, Diff: json.RawMessage(`{"name":"x"}`)}
	case proto.KindBoardTasks:
		return proto.Envelope{Event: proto.EventUpdateTask, ID: id, UpdatedAt: updatedAt, Diff: json.RawMessage(`{"title":"x"}`)}
	case proto.KindBoardSprints:
		return proto.Envelope{Event: proto.EventUpdateSprint, ID: id, UpdatedAt: updatedAt, Diff: json.RawMessage(`{"name":"x"}`)}
	case proto.KindChat:
		return proto.Envelope{Event: proto.EventNewMessage, ID: id, UpdatedAt: updatedAt, Data: json.RawMessage(`{"text":"hi"}`)}
	}
	panic(fmt.Sprintf("no envelope for %s", room))
}

// publish publishes a valid envelope to room and returns its stream sequence.
func (st *stack) publish(t *testing.T, room proto.Room, id string, updatedAt int64) uint64 {
	t.Helper()
	ack, err := st.pub.Publish(context.Background(), room, envelope(room, id, updatedAt))
	require.NoError(t, err)
	return ack.Sequence
}

func mustRoom(t *testing.T, name string) proto.Room {
	t.Helper()
	r, err := proto.ParseRoom(name)
	require.NoError(t, err)
	return r
}

// kvState reads room's state straight from KV; nil when it has none.
func (st *stack) kvState(t *testing.T, room string) *proto.RoomState {
	t.Helper()
	e, err := st.kv.Get(context.Background(), room)
	if err == jetstream.ErrKeyNotFound {
		return nil
	}
	require.NoError(t, err)
	var s proto.RoomState
	require.NoError(t, json.Unmarshal(e.Value(), &s))
	return &s
}

// waitStates waits until KV holds exactly want for every room in it.
func (st *stack) waitStates(t *testing.T, want map[string]proto.RoomState) {
	t.Helper()
	var last string
	ok := func() bool {
		for room, w := range want {
			got := st.kvState(t, room)
			if got == nil || *got != w {
				last = fmt.Sprintf("room %s: got %+v, want %+v", room, got, w)
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(waitFor)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("room states not reached within %s: %s", waitFor, last)
		}
		<-time.After(10 * time.Millisecond)
	}
}

// consumerIdle waits until the durable consumer has nothing pending and
// nothing unacknowledged.
func (st *stack) consumerIdle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := st.js.Consumer(context.Background(), proto.StreamRooms, DefaultDurable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, waitFor, 10*time.Millisecond)
}

// get asks roomstate.get like the gateway does.
func (st *stack) get(t *testing.T, room string) (*proto.RoomState, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var res *proto.RoomState
	err := proto.Request(ctx, st.nc, proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: room}, &res)
	return res, err
}
