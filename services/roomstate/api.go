package roomstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/roomcast/roomcast/process/panicguard"
	"github.com/roomcast/roomcast/proto"
)

// Version is the micro service's version, reported by $SRV.INFO.
const Version = "0.1.0"

const (
	// maxInFlight bounds the requests answered at once per replica; past it
	// the endpoint's subscription waits, and NATS buffers.
	maxInFlight = 64
	// readTimeout bounds one request's KV reads.
	readTimeout = 5 * time.Second
	// parallelReads is how many rooms of one getmany are read at once.
	parallelReads = 16
)

// api answers roomstate.get and roomstate.getmany from KV, never from
// memory, so any replica answers the same.
type api struct {
	nc    *nats.Conn
	store *stateStore
	log   zerolog.Logger
	sem   chan struct{}
	wg    sync.WaitGroup
	// guard stops a panic in a request: see docs/decisions.md.
	guard     *panicguard.Guard
	panicHook func(where string) // Config.panicHook (tests only)
}

// addService registers the micro service and its two endpoints on nc. Every
// replica joins the same queue group, so each request is answered once.
func addService(nc *nats.Conn, a *api) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        proto.ServiceRoomState,
		Version:     Version,
		Description: "roomcast room state: each room's lastBroadcastTimestamp and latest seq",
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service %s: %w", proto.ServiceRoomState, err)
	}
	for _, ep := range []struct {
		name, subject string
		h             func(context.Context, []byte) (any, *proto.Error)
	}{
		{"get", proto.SubjectRoomStateGet, a.get},
		{"getmany", proto.SubjectRoomStateGetMany, a.getMany},
	} {
		if err := svc.AddEndpoint(ep.name, a.handler(ep.name, ep.h), micro.WithEndpointSubject(ep.subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("add endpoint %s: %w", ep.subject, err)
		}
	}
	return svc, nil
}

// handler answers each request on its own goroutine, at most maxInFlight at
// once: a KV read takes a round trip, and requests should not queue behind
// one another.
func (a *api) handler(endpoint string, h func(context.Context, []byte) (any, *proto.Error)) micro.Handler {
	return micro.HandlerFunc(func(req micro.Request) {
		a.sem <- struct{}{}
		a.wg.Add(1)
		go func() {
			defer func() { <-a.sem; a.wg.Done() }()
			answer := func(res any, perr *proto.Error) {
				// Not req.RespondJSON: micro's request must not be used once
				// its handler has returned, and this runs on a goroutine of
				// its own.
				err := proto.Respond(a.nc, req.Reply(), res, perr)
				code := "ok"
				if perr != nil {
					code = string(perr.Code)
				}
				a.store.m.requests.WithLabelValues(endpoint, code).Inc()
				if err != nil {
					a.log.Debug().Err(err).Str("subject", req.Subject()).Msg("reply")
				}
			}
			// A read changes nothing: a panic is answered internal.
			defer a.guard.Recover(endpoint, func() { answer(nil, proto.Errorf(proto.CodeInternal, "internal error")) })
			if a.panicHook != nil {
				a.panicHook(endpoint)
			}
			ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
			defer cancel()
			answer(h(ctx, req.Data()))
		}()
	})
}

// wait returns once every request in flight is answered.
func (a *api) wait() { a.wg.Wait() }

func (a *api) get(ctx context.Context, data []byte) (any, *proto.Error) {
	var args proto.RoomArgs
	if err := json.Unmarshal(data, &args); err != nil {
		return nil, proto.Errorf(proto.CodeInvalidArgument, "%s wants {\"roomName\": \"…\"}: %v", proto.SubjectRoomStateGet, err)
	}
	room, perr := parseRoom(args.RoomName)
	if perr != nil {
		return nil, perr
	}
	st, perr := a.read(ctx, room)
	if perr != nil {
		return nil, perr
	}
	return st, nil // nil marshals as null: never broadcast to, or expired
}

func (a *api) getMany(ctx context.Context, data []byte) (any, *proto.Error) {
	var args proto.RoomStatesArgs
	if err := json.Unmarshal(data, &args); err != nil {
		return nil, proto.Errorf(proto.CodeInvalidArgument, "%s wants {\"roomNames\": [\"…\"]}: %v", proto.SubjectRoomStateGetMany, err)
	}
	if len(args.RoomNames) > proto.MaxBatchRooms {
		return nil, proto.Errorf(proto.CodeInvalidArgument, "%s: %d rooms, the limit is %d", proto.SubjectRoomStateGetMany, len(args.RoomNames), proto.MaxBatchRooms)
	}
	rooms := make([]proto.Room, len(args.RoomNames))
	for i, name := range args.RoomNames {
		r, perr := parseRoom(name)
		if perr != nil {
			return nil, perr
		}
		rooms[i] = r
	}
	if res, ok := a.getManyBatched(ctx, args.RoomNames, rooms); ok {
		return res, nil
	}
	states := make([]*proto.RoomState, len(rooms))
	errs := make([]*proto.Error, len(rooms))
	var g errgroup.Group
	g.SetLimit(parallelReads)
	for i, r := range rooms {
		g.Go(func() error {
			states[i], errs[i] = a.read(ctx, r)
			return nil
		})
	}
	_ = g.Wait()
	res := proto.RoomStatesResult{States: make(map[string]*proto.RoomState, len(rooms))}
	for i, name := range args.RoomNames {
		if errs[i] != nil {
			return nil, errs[i]
		}
		res.States[name] = states[i]
	}
	return res, nil
}

// getManyBatched answers a getmany with one batched read (GetMany); false
// when that could not answer and the rooms are to be read one by one.
func (a *api) getManyBatched(ctx context.Context, names []string, rooms []proto.Room) (proto.RoomStatesResult, bool) {
	stored := make([]string, 0, len(rooms))
	for _, r := range rooms {
		if r.Kind().Stored() {
			stored = append(stored, r.Name())
		}
	}
	states, err := a.store.GetMany(ctx, stored)
	if err != nil {
		if !errors.Is(err, errNoMultiGet) {
			a.log.Warn().Err(err).Int("rooms", len(stored)).Msg("batched read of room states: reading them one by one")
		}
		return proto.RoomStatesResult{}, false
	}
	res := proto.RoomStatesResult{States: make(map[string]*proto.RoomState, len(rooms))}
	j := 0
	for i, r := range rooms {
		var st *proto.RoomState
		if r.Kind().Stored() {
			st = states[j]
			j++
		}
		res.States[names[i]] = st
	}
	return res, true
}

func parseRoom(name string) (proto.Room, *proto.Error) {
	r, err := proto.ParseRoom(name)
	if err != nil {
		return proto.Room{}, proto.Errorf(proto.CodeInvalidArgument, "%v", err)
	}
	return r, nil
}

// read is r's state; client rooms are never stored, so theirs is always nil.
func (a *api) read(ctx context.Context, r proto.Room) (*proto.RoomState, *proto.Error) {
	if !r.Kind().Stored() {
		return nil, nil
	}
	st, err := a.store.Get(ctx, r.Name())
	if err != nil {
		a.log.Warn().Err(err).Str("room", r.Name()).Msg("read room state")
		if errors.Is(err, errBadValue) {
			return nil, proto.Errorf(proto.CodeInternal, "room state of %s could not be read", r)
		}
		return nil, proto.Errorf(proto.CodeUnavailable, "room state of %s: %s did not answer, retry later", r, proto.BucketRoomState)
	}
	return st, nil
}
