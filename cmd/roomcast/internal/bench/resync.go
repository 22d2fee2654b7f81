package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"io"
	"strconv"
	"time"

	"github.com/roomcast/roomcast/proto"
)

// Resync: the latency of getChangesSince for a client that was away, with a
// large stream. The tool fills stream ROOMS with -stream-msgs messages over
// -rooms boards (the background), then publishes -changes changes to one
// room (board-b0-tasks), and asks for that room's changes since just before
// them, -queries times in a row from one socket.
//
// roomcast only: the reference peer keeps no history. The endpoint is the
// gateway's, answered by the sync service over NATS.
func runResync(ctx context.Context, o options, srv *server, log io.Writer) (result, error) {
	res := result{Target: srv.name, Mode: modeResync}
	if srv.js == nil {
		return res, fmt.Errorf("resync needs roomcast's NATS")
	}
	target, err := proto.BoardTasksRoom("b0")
	if err != nil {
		return res, err
	}
	background := max(1, o.Rooms-1)
	pub := srv.newPublisher()
	start := time.Now()
	for k := 0; k < o.StreamMsgs; k++ {
		if k%50000 == 0 && ctx.Err() != nil {
			return res, ctx.Err()
		}
		room, env, err := benchEnvelope(1+k%background, uint64(k), 0, time.Now(), "")
		if err != nil {
			return res, err
		}
		if err := pub.add(ctx, room, env); err != nil {
			return res, err
		}
	}
	if _, err := pub.wait(ctx); err != nil {
		return res, err
	}
	fill := time.Since(start)
	fmt.Fprintf(log, "%s: %d background messages stored in %s\n", srv.name, o.StreamMsgs, fill.Round(time.Millisecond))
	sleepCtx(ctx, 5*time.Millisecond)
	since := time.Now().UnixMilli()
	sleepCtx(ctx, 5*time.Millisecond)
	for k := 0; k < o.Changes; k++ {
		env := proto.Envelope{Event: proto.EventUpdateTask, ID: "r" + strconv.Itoa(k), UpdatedAt: time.Now().UnixMilli(), Diff: json.RawMessage(`{"title":"changed"}`)}
		if err := pub.add(ctx, target, env); err != nil {
			return res, err
		}
	}
	failed, err := pub.wait(ctx)
	if err != nil {
		return res, err
	}
	if failed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d publishes failed", failed))
	}

	// The gateway limits endpoint calls per socket (20/s by default): the
	// queries go round-robin over a few sockets, one in flight at a time,
	// paced to stay under the limit.
	const sockets, perSocketRate = 4, 15.0
	var conns []*sioclient.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for i := range sockets {
		tok, err := mintToken(srv.secret, userOf(i), time.Hour)
		if err != nil {
			return res, err
		}
		c, err := sioclient.Dial(ctx, sioclient.Options{URL: sioclient.URL(srv.url), Token: tok, ClientID: clientOf(i)})
		if err != nil {
			return res, err
		}
		conns = append(conns, c)
	}
	h := NewHistogram()
	args := proto.ChangesArgs{RoomName: target.Name(), Cursor: proto.Cursor{Since: &since}}
	var got proto.ChangesResult
	interval := time.Second * 10 / (sockets * perSocketRate * 10)
	next := time.Now()
	for q := 0; q < o.Queries; q++ {
		sleepCtx(ctx, time.Until(next))
		next = next.Add(interval)
		c := conns[q%sockets]
		t := time.Now()
		ack, err := c.Call(string(proto.EndpointGetChangesSince), args, nil)
		if err != nil {
			return res, fmt.Errorf("getChangesSince: %w", err)
		}
		h.Record(int64(time.Since(t)))
		if q == 0 {
			if err := json.Unmarshal(ack.Data, &got); err != nil {
				return res, fmt.Errorf("getChangesSince: %w", err)
			}
		}
	}
	s := h.Summary()
	res.Metrics = []metric{
		{Name: "stream messages", Value: float64(o.StreamMsgs + o.Changes), Higher: true},
		{Name: "changes returned", Value: float64(len(got.Changes))},
		{Name: "complete", Value: b2f(got.Complete)},
		{Name: "getChangesSince p50", Value: ms(s.P50), Unit: "ms"},
		{Name: "getChangesSince p99", Value: ms(s.P99), Unit: "ms"},
		{Name: "getChangesSince max", Value: ms(s.Max), Unit: "ms"},
		{Name: "stream fill rate", Value: float64(o.StreamMsgs) / fill.Seconds(), Unit: "msg/s", Higher: true},
	}
	if len(got.Changes) != o.Changes {
		res.Notes = append(res.Notes, fmt.Sprintf("asked for %d changes, got %d", o.Changes, len(got.Changes)))
	}
	return res, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
