package roomstate

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

// FuzzRequests feeds arbitrary bytes to both endpoints: an answer is a
// result or an invalid_argument, never a panic, and never anything else for
// input that is not even a room.
func FuzzRequests(f *testing.F) {
	for _, s := range []string{
		`{"roomName":"board-b1-tasks"}`, `{"roomName":"board-*"}`, `{"roomName":""}`, `null`, `{`,
		`{"roomNames":["board-b1","chat-b-a"]}`, `{"roomNames":null}`, `{"roomNames":[1]}`,
	} {
		f.Add([]byte(s))
	}
	_, _, js := natstest.RunStack(f, proto.StoreConfig{})
	kv, err := js.KeyValue(context.Background(), proto.BucketRoomState)
	if err != nil {
		f.Fatal(err)
	}
	a := &api{store: newStateStore(kv, newMetrics(prometheus.NewRegistry()), zerolog.Nop()), log: zerolog.Nop()}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, h := range []func(context.Context, []byte) (any, *proto.Error){a.get, a.getMany} {
			_, perr := h(context.Background(), data)
			if perr != nil && perr.Code != proto.CodeInvalidArgument {
				t.Fatalf("%q: %v", data, perr)
			}
		}
	})
}
