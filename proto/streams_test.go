package proto_test

import (
	"context"
	"testing"
	"time"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/natstest"
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
