package bench

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Idle: N authenticated sockets, each in three rooms (plus its user and
// client rooms), doing nothing; what each costs the server in RSS.
func runIdle(ctx context.Context, o options, srv *server, log io.Writer) (result, error) {
	res := result{Target: srv.name, Mode: modeIdle}
	if srv.pid <= 0 {
		return res, fmt.Errorf("idle measures the server's RSS: give -server-pid with -url")
	}
	sleepCtx(ctx, o.Settle) // let the server finish starting before the baseline
	before, err := readProc(srv.pid)
	if err != nil {
		return res, err
	}
	serverW := watchProcs(ctx, []int{srv.pid}, 100*time.Millisecond)
	f, ready, err := startFleet(ctx, o, srv, modeIdle, o.Sockets)
	if err != nil {
		return res, err
	}
	defer f.close()
	connectCPU, _ := serverW.Stop()
	fmt.Fprintf(log, "%s: %d sockets connected and joined 3 rooms each in %s (%d failed); settling %s\n",
		srv.name, ready.Connected, ready.Took.Round(time.Millisecond), ready.Failed, o.Settle)
	if ready.Failed > 0 {
		fmt.Fprintf(log, "%s: first error: %s\n", srv.name, ready.FirstError)
	}
	if ready.Connected == 0 {
		return res, fmt.Errorf("%s: no socket connected: %s", srv.name, ready.FirstError)
	}
	sleepCtx(ctx, o.Settle)
	after, err := readProc(srv.pid)
	if err != nil {
		return res, err
	}
	n := float64(ready.Connected)
	perSocket := float64(after.RSS-before.RSS) / n
	res.Connected, res.ConnectFailed = ready.Connected, ready.Failed
	res.Metrics = []metric{
		{Name: "sockets", Value: n, Unit: "", Higher: true},
		{Name: "server RSS per socket", Value: perSocket / 1024, Unit: "KB"},
		{Name: "server RSS before", Value: float64(before.RSS) / (1 << 20), Unit: "MiB"},
		{Name: "server RSS with sockets", Value: float64(after.RSS) / (1 << 20), Unit: "MiB"},
		{Name: "connect+join time", Value: ready.Took.Seconds(), Unit: "s"},
		{Name: "server CPU per connect", Value: float64(connectCPU) / float64(time.Microsecond) / n, Unit: "µs"},
	}
	return res, nil
}

// Storm: N sockets in three rooms each, dropped at once (the TCP connections
// closed without a goodbye, as when a network or a load balancer fails: the
// server sees a transport close, which leaves a session it can recover);
// each reconnects at once (or after -jitter), presenting its session's pid
// and last offset when the server gave it one, as socket.io-client does, and
// rejoins its rooms unless the server recovered it.
//
// With -cut-broadcasts N the sockets first get one broadcast on their
// board's tasks room (so each holds an offset), then are cut and stay away
// until the server has seen every one go and N broadcasts per board are
// stored; then they come back, and the storm counts how each caught up:
// recovered (the server replayed what it missed) or not (the socket
// resyncs the room with getChangesSince, as the client library does).
func runStorm(ctx context.Context, o options, srv *server, log io.Writer) (result, error) {
	res := result{Target: srv.name, Mode: modeStorm}
	f, ready, err := startFleet(ctx, o, srv, modeStorm, o.Sockets)
	if err != nil {
		return res, err
	}
	defer f.close()
	fmt.Fprintf(log, "%s: %d sockets connected and joined in %s (%d failed)\n", srv.name, ready.Connected, ready.Took.Round(time.Millisecond), ready.Failed)
	if ready.Connected == 0 {
		return res, fmt.Errorf("%s: no socket connected: %s", srv.name, ready.FirstError)
	}
	sleepCtx(ctx, o.Settle)
	var serverW *procWatch
	var cut *stormCut
	if o.CutBroadcasts > 0 {
		if cut, err = cutSockets(ctx, o, srv, f, ready.Connected, log); err != nil {
			return res, err
		}
	}
	if srv.pid > 0 {
		serverW = watchProcs(ctx, []int{srv.pid}, 100*time.Millisecond)
	}
	var prof *serverProfile
	if o.ServerCPUProfile != "" && srv.name == targetRoomcast {
		prof = startServerProfile(ctx, srv.url, o.ServerCPUProfile, o.ProfileSeconds)
	}
	var stopToolProfile func()
	if o.CPUProfile != "" {
		if stopToolProfile, err = startToolProfile(o.CPUProfile); err != nil {
			return res, err
		}
	}
	toolW := watchProcs(ctx, f.toolPIDs(), time.Second)
	t0 := time.Now()
	evs, err := f.command(ctx, workerCmd{Cmd: "drop", Deadline: o.StormDeadline, Want: o.CutBroadcasts})
	var tallies []workerEvent
	if err == nil && cut != nil {
		tallies, err = f.command(ctx, workerCmd{Cmd: "tally", Deadline: o.StormDeadline})
	}
	toolCPU, _ := toolW.Stop()
	if stopToolProfile != nil {
		stopToolProfile()
	}
	if err != nil {
		return res, err
	}
	var expected, rejoined, recovered int
	var failures int64
	var done int64
	var firstErr string
	for _, ev := range evs {
		if firstErr == "" {
			firstErr = ev.Error
		}
		expected += ev.Expected
		rejoined += ev.Rejoined
		recovered += ev.Recovered
		failures += ev.Failures
		done = max(done, ev.DoneNs)
	}
	took := time.Duration(done - t0.UnixNano())
	if done == 0 {
		took = 0
	}
	res.Connected, res.ConnectFailed = ready.Connected, ready.Failed
	res.Metrics = []metric{
		{Name: "sockets dropped", Value: float64(expected), Higher: true},
		{Name: "back and rejoined", Value: float64(rejoined), Higher: true},
		{Name: "time until all back", Value: took.Seconds(), Unit: "s"},
		{Name: "back recovered", Value: float64(recovered), Higher: true},
		{Name: "failed reconnect attempts", Value: float64(failures)},
		{Name: "tool CPU during storm", Value: toolCPU.Seconds(), Unit: "s"},
	}
	if cut != nil {
		res.Metrics = append(res.Metrics, cut.tally(tallies, t0, o.CutBroadcasts)...)
		res.Metrics = append(res.Metrics, cut.metrics...)
		res.Notes = append(res.Notes, cut.notes...)
	}
	if serverW != nil {
		cpu, rss := serverW.Stop()
		res.Metrics = append(res.Metrics,
			metric{Name: "server CPU during storm", Value: cpu.Seconds(), Unit: "s"},
			metric{Name: "server CPU per reconnect", Value: float64(cpu) / float64(time.Microsecond) / float64(max(1, rejoined)), Unit: "µs"},
			metric{Name: "server peak RSS", Value: float64(rss) / (1 << 20), Unit: "MiB"})
		if cut != nil {
			res.Metrics = append(res.Metrics,
				metric{Name: "server CPU of the cut (closes)", Value: cut.cpu.Seconds(), Unit: "s"},
				metric{Name: "server CPU per close", Value: float64(cut.cpu) / float64(time.Microsecond) / float64(max(1, cut.dropped)), Unit: "µs"})
		}
	}
	if rejoined < expected {
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d sockets were not back within %s", expected-rejoined, expected, o.StormDeadline))
	}
	fmt.Fprintf(log, "%s: storm: %d/%d back in %s (%d recovered), %d failed attempts\n", srv.name, rejoined, expected, took.Round(time.Millisecond), recovered, failures)
	if firstErr != "" {
		fmt.Fprintf(log, "%s: storm: first failure: %s\n", srv.name, firstErr)
	}
	if prof != nil {
		if err := prof.wait(); err != nil {
			return res, err
		}
		fmt.Fprintf(log, "%s: server CPU profile (%ds from the drop) in %s\n", srv.name, o.ProfileSeconds, o.ServerCPUProfile)
	}
	return res, nil
}
