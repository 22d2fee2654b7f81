package natstest_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

// A room's state must expire when its messages do, and a short MaxAge (tests,
// small deployments) must be accepted by nats-server.
func TestEnsureShortMaxAge(t *testing.T) {
	c := proto.StoreConfig{MaxAge: 5 * time.Second}
	if got := c.RoomsStream().Duplicates; got != c.MaxAge {
		t.Fatalf("duplicate window %s, want it capped at MaxAge %s", got, c.MaxAge)
	}
	if got, want := c.RoomStateBucket().TTL, c.RoomsStream().MaxAge; got != want {
		t.Fatalf("ROOM_STATE TTL %s, stream max age %s: they must match", got, want)
	}
	_, _, js := natstest.RunStack(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, proto.StreamRooms)
	if err != nil {
		t.Fatal(err)
	}
	if s.CachedInfo().Config.MaxAge != c.MaxAge {
		t.Fatalf("stream max age %s, want %s", s.CachedInfo().Config.MaxAge, c.MaxAge)
	}
	kv, err := js.KeyValue(ctx, proto.BucketRoomState)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != c.MaxAge {
		t.Fatalf("bucket TTL %s, want %s", st.TTL(), c.MaxAge)
	}
}

func TestDefaultDuplicateWindow(t *testing.T) {
	if got := (proto.StoreConfig{}).RoomsStream().Duplicates; got != proto.DefaultDuplicateWindow {
		t.Fatalf("duplicate window %s, want %s", got, proto.DefaultDuplicateWindow)
	}
}

// A publisher that sets the stream's headers itself cannot choose the
// sequence a re-published message carries: the server appends its own, and
// StreamHeader reads those.
func TestStreamHeaderIgnoresThePublishersOwn(t *testing.T) {
	_, nc, js := natstest.RunStack(t, proto.StoreConfig{})
	room, _ := proto.BoardTasksRoom("b1")
	subjects := proto.Subjects{}
	live := make(chan *nats.Msg, 1)
	_, err := nc.ChanSubscribe(subjects.Live(room), live)
	if err != nil {
		t.Fatal(err)
	}
	forged := nats.NewMsg(subjects.Publish(room))
	forged.Header.Set(jetstream.SequenceHeader, "999")
	forged.Header.Set(jetstream.LastSequenceHeader, "998")
	forged.Header.Set(jetstream.SubjectHeader, "rooms.board.b2.tasks")
	forged.Data = []byte(`{"event":"delete-task","id":"t1","updatedAt":1}`)
	ack, err := js.PublishMsg(context.Background(), forged)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-live:
		if m.Header.Get(jetstream.SequenceHeader) != "999" {
			t.Fatalf("the server no longer keeps a publisher's Nats-Sequence (%v): StreamHeader may be simpler now", m.Header)
		}
		for key, want := range map[string]string{
			jetstream.SequenceHeader:     strconv.FormatUint(ack.Sequence, 10),
			jetstream.LastSequenceHeader: "0",
			jetstream.SubjectHeader:      subjects.Publish(room),
		} {
			if got := proto.StreamHeader(m.Header, key); got != want {
				t.Errorf("StreamHeader(%s) = %q, want the server's %q", key, got, want)
			}
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no re-published message")
	}
	if got := proto.StreamHeader(nats.Header{}, jetstream.SequenceHeader); got != "" {
		t.Fatalf("no header: %q, want empty", got)
	}
}
