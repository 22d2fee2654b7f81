package gateway

import (
	"context"
	"sync"

	"github.com/roomcast/roomcast/proto"
)

// stateReader asks roomstate for room states on behalf of many sockets at
// once: the rooms asked for while a request is out go together in the next
// roomstate.getmany, each name once. In a reconnect storm, a board's hundred
// sockets rejoining at once cost one state read instead of a hundred.
//
// Every answer is read after its caller asked (a caller never shares a
// request that was already out): a socket that subscribed to a room, then
// asked, gets a state roomstate held after the subscription existed. That
// state may lag the stream (roomstate folds messages in a few ms behind),
// but every message after the one it names reaches the socket live or shows
// as a prevSeq gap, which the client reads from sync (docs/roomstate.md,
// "What a client should do about the race").
type stateReader struct {
	g *Gateway

	mu      sync.Mutex
	pending map[string][]chan stateResult // room name → waiting callers
	sending bool                          // a sender goroutine is at work
}

type stateResult struct {
	st  *proto.RoomState
	err error
}

// read returns r's state; nil when r was never broadcast to.
func (b *stateReader) read(ctx context.Context, r proto.Room) (*proto.RoomState, error) {
	sts, err := b.readMany(ctx, r)
	if err != nil {
		return nil, err
	}
	return sts[0], nil
}

// readMany returns the states of rooms (nil for one never broadcast to),
// asked in one batch.
func (b *stateReader) readMany(ctx context.Context, rooms ...proto.Room) ([]*proto.RoomState, error) {
	chs := make([]chan stateResult, len(rooms))
	b.mu.Lock()
	if b.pending == nil {
		b.pending = map[string][]chan stateResult{}
	}
	for i, r := range rooms {
		chs[i] = make(chan stateResult, 1)
		b.pending[r.Name()] = append(b.pending[r.Name()], chs[i])
	}
	start := !b.sending
	b.sending = true
	b.mu.Unlock()
	if start {
		go b.send()
	}
	out := make([]*proto.RoomState, len(rooms))
	for i, ch := range chs {
		select {
		case res := <-ch:
			if res.err != nil {
				return nil, res.err
			}
			out[i] = res.st
		case <-ctx.Done():
			// The client reads this: in its words, not context's.
			return nil, proto.Errorf(proto.CodeUnavailable, "room state of %s: no answer in time: retry later", rooms[i].Name())
		}
	}
	return out, nil
}

// send sends what is pending, batch after batch, until nothing is.
func (b *stateReader) send() {
	for {
		b.mu.Lock()
		if len(b.pending) == 0 {
			b.sending = false
			b.mu.Unlock()
			return
		}
		batch := make(map[string][]chan stateResult, min(len(b.pending), proto.MaxBatchRooms))
		for name, chs := range b.pending {
			if len(batch) == proto.MaxBatchRooms {
				break
			}
			batch[name] = chs
			delete(b.pending, name)
		}
		b.mu.Unlock()
		b.ask(batch)
	}
}

// ask sends one batch and answers its callers.
func (b *stateReader) ask(batch map[string][]chan stateResult) {
	args := proto.RoomStatesArgs{RoomNames: make([]string, 0, len(batch))}
	for name := range batch {
		args.RoomNames = append(args.RoomNames, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.g.cfg.RequestTimeout)
	defer cancel()
	var res proto.RoomStatesResult
	err := proto.Request(ctx, b.g.nc, proto.SubjectRoomStateGetMany, args, &res)
	for name, chs := range batch {
		r := stateResult{err: err}
		if err == nil {
			r.st = res.States[name]
		}
		for _, ch := range chs {
			ch <- r
		}
	}
}
