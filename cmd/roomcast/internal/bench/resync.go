package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/roomstate"
)

// Resync: the latency of getChangesSince for a client that was away, with a
// large stream. The tool fills stream ROOMS with -stream-msgs messages over
// -rooms boards (the background) and asks for two rooms' -changes changes,
// -queries times each, alternately, from a few sockets:
//
//   - back to back: board-b0-tasks's changes, published in one burst after
//     the background (the server's walk of the room is cheap there);
//   - interleaved: board-i0-tasks's changes, spread evenly through the last
//     tenth of the background, among the other rooms' messages (one every
//     1,000 stream messages with the default command line): the case the
//     sync service's index is for.
//
// Timing starts only once roomstate's durable consumer has folded everything
// just stored (no pending, no ack pending): otherwise the figures measure the
// CPU that backlog takes on the same machine, not the read. The wait is
// printed.
//
// roomcast only: the reference peer keeps no history. The endpoint is the
// gateway's, answered by the sync service over NATS.
func runResync(ctx context.Context, o options, srv *server, log io.Writer) (result, error) {
	res := result{Target: srv.name, Mode: modeResync}
	if srv.js == nil {
		return res, fmt.Errorf("resync needs roomcast's NATS")
	}
	burst, err := proto.BoardTasksRoom("b0")
	if err != nil {
		return res, err
	}
	spread, err := proto.BoardTasksRoom("i0")
	if err != nil {
		return res, err
	}
	plan := interleave(o.StreamMsgs, o.Changes)
	background := max(1, o.Rooms-1)
	pub := srv.newPublisher()
	start := time.Now()
	var spreadSince int64
	change := 0
	for k := 0; k < o.StreamMsgs; k++ {
		if k%50000 == 0 && ctx.Err() != nil {
			return res, ctx.Err()
		}
		if change < len(plan) && plan[change] == k {
			if change == 0 {
				spreadSince = time.Now().UnixMilli()
			}
			if err := pub.add(ctx, spread, resyncChange(change)); err != nil {
				return res, err
			}
			change++
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
	fmt.Fprintf(log, "%s: %d background messages stored in %s (%d of board-i0-tasks's changes among them)\n",
		srv.name, o.StreamMsgs, fill.Round(time.Millisecond), change)
	sleepCtx(ctx, 5*time.Millisecond)
	burstSince := time.Now().UnixMilli()
	sleepCtx(ctx, 5*time.Millisecond)
	for k := 0; k < o.Changes; k++ {
		if err := pub.add(ctx, burst, resyncChange(k)); err != nil {
			return res, err
		}
	}
	// Changes the background was too short to hold go after the burst.
	for ; change < o.Changes; change++ {
		if change == 0 {
			spreadSince = time.Now().UnixMilli()
		}
		if err := pub.add(ctx, spread, resyncChange(change)); err != nil {
			return res, err
		}
	}
	failed, err := pub.wait(ctx)
	if err != nil {
		return res, err
	}
	filled := time.Now()
	if failed > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d publishes failed", failed))
	}

	caughtUp, err := waitRoomstate(ctx, srv.js)
	if err != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("did not wait for roomstate: %v", err))
	}
	fmt.Fprintf(log, "%s: roomstate caught up %s after the last publish\n", srv.name, caughtUp.Round(time.Millisecond))
	if wait := time.Until(filled.Add(o.QueryAfter)); wait > 0 {
		fmt.Fprintf(log, "%s: queries start %s after the last publish (-query-after): waiting %s\n", srv.name, o.QueryAfter, wait.Round(time.Second))
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		res.Notes = append(res.Notes, fmt.Sprintf("queries started %s after the last publish", o.QueryAfter))
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
	layouts := []*resyncLayout{
		{name: "back to back", args: proto.ChangesArgs{RoomName: burst.Name(), Cursor: proto.Cursor{Since: &burstSince}}, h: NewHistogram()},
		{name: "interleaved", args: proto.ChangesArgs{RoomName: spread.Name(), Cursor: proto.Cursor{Since: &spreadSince}}, h: NewHistogram()},
	}
	interval := time.Second * 10 / (sockets * perSocketRate * 10)
	// The server's CPU over the queries (the process holds the gateway,
	// sync, roomstate and the embedded NATS: what a query costs them all)
	// and its memory after them (sync's index and tail among it).
	before, procErr := readProc(srv.pid)
	var prof *serverProfile
	if o.ServerCPUProfile != "" {
		prof = startServerProfile(ctx, srv.url, o.ServerCPUProfile, o.ProfileSeconds)
	}
	next := time.Now()
	for q := 0; q < o.Queries*len(layouts); q++ {
		sleepCtx(ctx, time.Until(next))
		next = next.Add(interval)
		c := conns[q%sockets]
		l := layouts[q%len(layouts)]
		t := time.Now()
		ack, err := c.Call(string(proto.EndpointGetChangesSince), l.args, nil)
		if err != nil {
			return res, fmt.Errorf("getChangesSince %s: %w", l.args.RoomName, err)
		}
		l.h.Record(int64(time.Since(t)))
		if q < len(layouts) {
			if err := json.Unmarshal(ack.Data, &l.got); err != nil {
				return res, fmt.Errorf("getChangesSince %s: %w", l.args.RoomName, err)
			}
		}
	}
	after, err := readProc(srv.pid)
	if prof != nil {
		if err := prof.wait(); err != nil {
			res.Notes = append(res.Notes, err.Error())
		}
	}
	printSyncReads(ctx, srv.url, srv.name, log)
	res.Metrics = []metric{
		{Name: "stream messages", Value: float64(o.StreamMsgs + 2*o.Changes), Higher: true},
		{Name: "stream fill rate", Value: float64(o.StreamMsgs) / fill.Seconds(), Unit: "msg/s", Higher: true},
		{Name: "roomstate caught up after", Value: ms(caughtUp), Unit: "ms"},
	}
	if srv.pid > 0 && procErr == nil && err == nil {
		queries := o.Queries * len(layouts)
		perQuery := (after.CPU - before.CPU) / time.Duration(max(1, queries))
		fmt.Fprintf(log, "%s: server CPU %s over %d queries (%s each), RSS %.1f MiB after them, peak %.1f MiB\n",
			srv.name, (after.CPU - before.CPU).Round(time.Millisecond), queries, perQuery.Round(time.Microsecond),
			float64(after.RSS)/(1<<20), float64(after.HWM)/(1<<20))
		res.Metrics = append(res.Metrics,
			metric{Name: "server CPU per query", Value: float64(perQuery.Microseconds()), Unit: "µs"},
			metric{Name: "server RSS after the queries", Value: float64(after.RSS) / (1 << 20), Unit: "MiB"},
		)
	}
	for i, l := range layouts {
		s := l.h.Summary()
		prefix := "getChangesSince "
		if i > 0 {
			prefix = l.name + " "
		}
		res.Metrics = append(res.Metrics,
			metric{Name: l.name + ": changes returned", Value: float64(len(l.got.Changes))},
			metric{Name: l.name + ": complete", Value: b2f(l.got.Complete)},
			metric{Name: prefix + "p50", Value: ms(s.P50), Unit: "ms"},
			metric{Name: prefix + "p90", Value: ms(s.P90), Unit: "ms"},
			metric{Name: prefix + "p99", Value: ms(s.P99), Unit: "ms"},
			metric{Name: prefix + "max", Value: ms(s.Max), Unit: "ms"},
		)
		if len(l.got.Changes) != o.Changes {
			res.Notes = append(res.Notes, fmt.Sprintf("%s: asked for %d changes, got %d", l.name, o.Changes, len(l.got.Changes)))
		}
	}
	return res, nil
}

// resyncLayout is one of the two rooms queried, and what it measured.
type resyncLayout struct {
	name string
	args proto.ChangesArgs
	h    *Histogram
	got  proto.ChangesResult
}

// resyncChange is the k-th change of a queried room: a resource of its own,
// so every change is one entry of the answer.
func resyncChange(k int) proto.Envelope {
	return proto.Envelope{Event: proto.EventUpdateTask, ID: "r" + strconv.Itoa(k), UpdatedAt: time.Now().UnixMilli(), Diff: json.RawMessage(`{"title":"changed"}`)}
}

// interleave says where the interleaved room's changes go in a background
// of total messages: before background message plan[i], spread evenly
// through the last tenth. Fewer than changes entries when the background is
// too short to hold them apart (the rest go after it).
func interleave(total, changes int) []int {
	region := total / 10
	if changes < 1 || region < changes {
		return nil
	}
	plan := make([]int, changes)
	step := region / changes
	for i := range plan {
		plan[i] = total - region + i*step
	}
	return plan
}

// printSyncReads prints how the sync service read (its reads and cuts
// counters, from the server's /metrics): a layout answered by the server's
// walk rather than the index (or the tail) shows there, with the tail's
// memory; and the time sync itself spent on
// sync.changes (sum and count: the mean, to set against the round trip the
// client sees; the buckets: whether the slow round trips were slow in sync). Best effort.
func printSyncReads(ctx context.Context, url, name string, log io.Writer) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "roomcast_sync_reads_total{") || strings.HasPrefix(line, "roomcast_sync_cut_total{") ||
			strings.HasPrefix(line, "roomcast_sync_tail_bytes ") ||
			strings.HasPrefix(line, `roomcast_sync_request_duration_seconds_bucket{endpoint="changes"`) ||
			strings.HasPrefix(line, `roomcast_sync_request_duration_seconds_sum{endpoint="changes"}`) ||
			strings.HasPrefix(line, `roomcast_sync_request_duration_seconds_count{endpoint="changes"}`) {
			fmt.Fprintf(log, "%s: %s\n", name, line)
		}
	}
}

// waitRoomstate waits until roomstate's durable consumer on stream ROOMS has
// nothing pending and nothing unacknowledged, and says how long that took.
func waitRoomstate(ctx context.Context, js jetstream.JetStream) (time.Duration, error) {
	began := time.Now()
	deadline := began.Add(3 * time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := js.Consumer(cctx, proto.StreamRooms, roomstate.DefaultDurable)
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = cons.Info(cctx)
		}
		cancel()
		switch {
		case err == nil && info.NumPending == 0 && info.NumAckPending == 0:
			return time.Since(began), nil
		case err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound):
			return time.Since(began), err
		case time.Now().After(deadline):
			return time.Since(began), fmt.Errorf("roomstate's consumer %s still behind after %s", roomstate.DefaultDurable, time.Since(began).Round(time.Second))
		case ctx.Err() != nil:
			return time.Since(began), ctx.Err()
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
