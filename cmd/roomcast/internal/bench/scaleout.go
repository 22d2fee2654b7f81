package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway"
	"github.com/roomcast/roomcast/services/roomstate"
)

// bench fleet: more sockets than one process may hold, the way a deployment
// holds them — several gateway processes on one NATS process, plus one
// roomstate process (every join asks it for the room's state; the sync
// service, which neither a join nor a broadcast passes through, is left
// out) — the sockets spread over worker processes dialling from several
// loopback addresses. Every socket joins one board; once all are in, the
// tool reads the servers' RSS and CPU from /proc, publishes one message to
// the board through stream ROOMS and times it to the last socket that
// receives it.
//
// The servers are this binary (or -bin) re-executed in internal modes:
// `bench fleet-nats ADDR HTTPADDR DIR`, an embedded nats-server with
// JetStream as `roomcast serve` starts it, and `bench fleet-gateway` and
// `bench fleet-roomstate`, configured from ROOMCAST_* exactly as
// bin/gateway and bin/roomstate are.

// The internal modes of bench fleet's server processes.
const (
	modeFleetNATS      = "fleet-nats"
	ModeFleetGateway   = "fleet-gateway" // exported: main starts a gateway's process with it (hostsGateway)
	modeFleetRoomstate = "fleet-roomstate"
)

// descriptorReserve is what a process keeps of its open-file limit for
// itself besides sockets: listeners, its NATS connection, the poller,
// stdio, logs, pipes.
const descriptorReserve = 100

// fleetSocketsPerIP is how many sockets bench fleet dials from one loopback
// address unless -source-ips says otherwise: a dial from a given address
// binds one of its ~28,000 ephemeral ports, and a run's closed sockets keep
// theirs for a minute (TIME_WAIT), so two runs in a row still fit.
const fleetSocketsPerIP = 10000

// socketBudget is how many sockets one process may hold here: the hard
// limit on open files (the soft one is raised to it), less the reserve.
func socketBudget() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Max > 1<<20 {
		return 1 << 20
	}
	return int(l.Max) - descriptorReserve
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// fleetDefaults fills in what bench fleet derives from the socket count:
// the gateways and the tool's worker processes (as few of each as hold the
// sockets within budget each: the tool shares the machine's cores with
// the servers, and each process more costs them all in scheduling), the
// source addresses, and the one room.
func (o *options) fleetDefaults(given map[string]bool, budget int) {
	if o.Gateways == 0 && budget > 0 {
		o.Gateways = max(1, ceilDiv(o.Sockets, budget))
	}
	if o.Procs == 0 && budget > 0 {
		o.Procs = max(1, ceilDiv(o.Sockets, budget))
		if !given["dial-concurrency"] {
			// as many connects in flight in all as one worker per
			// maxSocketsPerProc sockets would have: fewer leave the
			// gateways less to batch, and each connect costs them more
			o.DialConcurrency = ceilDiv(o.DialConcurrency*ceilDiv(o.Sockets, maxSocketsPerProc), o.Procs)
		}
	}
	if !given["source-ips"] {
		o.SourceIPs = min(254, max(1, ceilDiv(o.Sockets, fleetSocketsPerIP)))
	}
	if !given["rooms"] {
		o.Rooms = 1
	}
}

// checkFleet refuses what bench fleet cannot do, and a fleet that does not
// fit under budget descriptors per process.
func (o options) checkFleet(budget int) error {
	switch {
	case o.Target != targetRoomcast || o.Compare:
		return errors.New("fleet measures roomcast's gateways: drop -target and -compare")
	case o.URL != "" || o.Pin:
		return errors.New("fleet starts its own NATS and gateways, unpinned: drop -url and -pin")
	case o.Transport != transportWebSocket:
		return errors.New("fleet: WebSocket sockets only, drop -transport")
	case o.Recovery != "":
		return errors.New("fleet: drop -recovery; the gateways take ROOMCAST_RECOVERY_TTL from the environment")
	case o.Rooms != 1:
		return errors.New("fleet: every socket is in one room; drop -rooms")
	case o.Gateways < 1 || o.Gateways > o.Sockets:
		return fmt.Errorf("-gateways %d: want 1 to -sockets (%d)", o.Gateways, o.Sockets)
	case o.Procs < 0:
		return fmt.Errorf("-procs %d: want 0 or more", o.Procs)
	}
	if per := ceilDiv(o.Sockets, o.Gateways); per > budget {
		return fmt.Errorf("-sockets %d over -gateways %d is %d sockets per gateway, but a process here may hold %d descriptors (ulimit -Hn) "+
			"of which it keeps %d for itself: give -gateways %d or more, or -sockets %d or fewer",
			o.Sockets, o.Gateways, per, budget+descriptorReserve, descriptorReserve, ceilDiv(o.Sockets, budget), o.Gateways*budget)
	}
	procs := o.Procs
	if procs == 0 {
		procs = ceilDiv(o.Sockets, maxSocketsPerProc)
	}
	if per := ceilDiv(o.Sockets, min(procs, o.Sockets)); per > budget {
		return fmt.Errorf("-procs %d: %d sockets per worker process, more than the %d a process may hold here: give -procs %d or more",
			o.Procs, per, budget, ceilDiv(o.Sockets, budget))
	}
	return nil
}

// fleetStack is bench fleet's servers.
type fleetStack struct {
	nats      *server // its nc and js are the tool's own connection
	roomstate *server
	gateways  []*server
}

// close stops the gateways (at once, each with what sockets it still has),
// then roomstate, then NATS. Safe to call on a stack only partly started.
func (st *fleetStack) close() {
	var wg sync.WaitGroup
	for _, g := range st.gateways {
		wg.Add(1)
		go func() { defer wg.Done(); g.close() }()
	}
	wg.Wait()
	st.gateways = nil
	if st.roomstate != nil {
		st.roomstate.close()
		st.roomstate = nil
	}
	if st.nats != nil {
		st.nats.close()
		st.nats = nil
	}
}

// target is the stack as the workers see it: every gateway's URL.
func (st *fleetStack) target(secret string) *server {
	t := &server{name: targetRoomcast, url: st.gateways[0].url, secret: secret}
	for _, g := range st.gateways {
		t.gateways = append(t.gateways, g.url)
	}
	return t
}

func (st *fleetStack) gatewayPIDs() []int {
	var pids []int
	for _, g := range st.gateways {
		pids = append(pids, g.pid)
	}
	return pids
}

// startFleetStack starts NATS, ensures the stream and buckets, and starts
// o.Gateways gateways on it; on any failure it stops what it started.
func startFleetStack(ctx context.Context, o options, secret string, log io.Writer) (*fleetStack, error) {
	bin := o.Bin
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the roomcast binary: %w (give -bin)", err)
		}
		bin = exe
	}
	st := &fleetStack{}
	n, err := startFleetNATS(ctx, bin)
	if err != nil {
		return nil, err
	}
	st.nats = n
	fmt.Fprintf(log, "fleet: NATS at %s (pid %d)\n", n.natsURL, n.pid)
	if err := n.connectNATS(ctx, o); err != nil {
		st.close()
		return nil, err
	}
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = proto.Ensure(ectx, n.js, proto.StoreConfig{})
	cancel()
	if err != nil {
		st.close()
		return nil, fmt.Errorf("ensure stream %s and the buckets: %w", proto.StreamRooms, err)
	}
	// roomstate and the gateways start together
	common := []string{"ROOMCAST_NATS_URL=" + n.natsURL, "ROOMCAST_LOG_LEVEL=warn"}
	srvs := make([]*server, 1+o.Gateways)
	errs := make([]error, len(srvs))
	var wg sync.WaitGroup
	for k := range srvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if k == 0 {
				srvs[k], errs[k] = startFleetService(ctx, bin, modeFleetRoomstate, "roomstate", "ROOMCAST_ROOMSTATE_HTTP_ADDR",
					append(common, "ROOMCAST_SKIP_ENSURE=true"))
				return
			}
			srvs[k], errs[k] = startFleetService(ctx, bin, ModeFleetGateway, "gateway "+strconv.Itoa(k), "ROOMCAST_HTTP_ADDR",
				append(common, "ROOMCAST_JWT_SECRET="+secret, "ROOMCAST_GATEWAY_ID=bench_gw"+strconv.Itoa(k)))
		}()
	}
	wg.Wait()
	st.roomstate = srvs[0]
	for _, g := range srvs[1:] {
		if g != nil {
			st.gateways = append(st.gateways, g)
		}
	}
	if err := errors.Join(errs...); err != nil {
		st.close()
		return nil, err
	}
	fmt.Fprintf(log, "fleet: roomstate (pid %d)\n", st.roomstate.pid)
	for _, g := range st.gateways {
		fmt.Fprintf(log, "fleet: %s at %s (pid %d)\n", g.name, g.url, g.pid)
	}
	return st, nil
}

// startFleetNATS runs `bench fleet-nats` on free loopback ports, its store
// in a fresh directory, ready once its monitoring endpoint's /healthz
// (JetStream included) answers.
func startFleetNATS(ctx context.Context, bin string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "roomcast-bench-nats-")
	if err != nil {
		return nil, err
	}
	addr, httpAddr := "127.0.0.1:"+strconv.Itoa(port), "127.0.0.1:"+strconv.Itoa(httpPort)
	cmd := exec.Command(bin, "bench", modeFleetNATS, addr, httpAddr, filepath.Join(dir, "jetstream"))
	cmd.Env = os.Environ()
	dieWithParent(cmd)
	s := &server{name: "nats", url: "http://" + httpAddr, natsURL: "nats://" + addr}
	if err := s.run(ctx, cmd, dir, "nats.log", "/healthz", bin+" bench "+modeFleetNATS, "the fleet's NATS"); err != nil {
		return nil, err
	}
	return s, nil
}

// startFleetService runs `bench MODE` (a gateway or roomstate) with env,
// its HTTP endpoints on a free loopback port given in addrEnv, ready once
// its /readyz answers.
func startFleetService(ctx context.Context, bin, mode, name, addrEnv string, env []string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "roomcast-bench-"+mode+"-")
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "bench", mode)
	cmd.Env = append(append(os.Environ(), env...), addrEnv+"="+addr)
	dieWithParent(cmd)
	s := &server{name: name, url: "http://" + addr}
	if err := s.run(ctx, cmd, dir, mode+".log", "/readyz", bin+" bench "+mode, name); err != nil {
		return nil, err
	}
	return s, nil
}

// fleetNATSMain is `bench fleet-nats ADDR HTTPADDR STOREDIR`: nats-server
// with JetStream in this process, with the options `roomcast serve` gives
// its embedded one, plus a monitoring listener for readiness, until ctx
// ends.
func fleetNATSMain(ctx context.Context, args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("bench %s: want ADDR HTTPADDR STOREDIR, got %q", modeFleetNATS, args)
	}
	o := &natsserver.Options{ServerName: "roomcast-bench-fleet", JetStream: true, StoreDir: args[2], NoSigs: true, NoLog: true}
	var err error
	if o.Host, o.Port, err = splitHostPort(args[0]); err != nil {
		return err
	}
	if o.HTTPHost, o.HTTPPort, err = splitHostPort(args[1]); err != nil {
		return err
	}
	s, err := natsserver.NewServer(o)
	if err != nil {
		return err
	}
	go s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats-server on %s did not start listening within 10s", args[0])
	}
	<-ctx.Done()
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("%q: the port is not a number", addr)
	}
	return host, port, nil
}

// fleetServiceMain is `bench fleet-gateway` and `bench fleet-roomstate`:
// bin/gateway's and bin/roomstate's main (settings from ROOMCAST_*, the
// gateway's collector target), in this binary.
func fleetServiceMain(ctx context.Context, mode string) error {
	var common flagenv.Common
	var gw gateway.Config
	var rs roomstate.Config
	fs := flagenv.New(flag.NewFlagSet(mode, flag.ContinueOnError))
	common.Bind(fs, "nats://127.0.0.1:4222")
	if mode == ModeFleetGateway {
		flagenv.GCPercent(flagenv.GatewayGCPercent)
		gw.Bind(fs)
	} else {
		rs.Bind(fs)
	}
	if err := fs.Parse(nil); err != nil {
		return err
	}
	store, err := common.Store()
	if err != nil {
		return err
	}
	logger, err := common.Logger(os.Stderr)
	if err != nil {
		return err
	}
	if mode == ModeFleetGateway {
		gw.NATSURL, gw.Store, gw.Logger = common.NATSURL, store, logger
		return gateway.Run(ctx, gw)
	}
	rs.NATSURL, rs.Store, rs.Logger = common.NATSURL, store, logger
	return roomstate.Run(ctx, rs)
}

// runFleet is bench fleet: start the stack, connect and join every socket
// (timing it, and the servers' CPU), read the RSS of every server, then
// publish one message to the room and time it to the last socket.
func runFleet(ctx context.Context, o options, log io.Writer) (result, error) {
	res := result{Target: targetRoomcast, Mode: modeFleet}
	secret := o.Secret
	if secret == "" {
		secret = randomSecret()
	}
	st, err := startFleetStack(ctx, o, secret, log)
	if err != nil {
		return res, err
	}
	defer st.close()
	sleepCtx(ctx, o.Settle) // let the servers finish starting before the baseline
	// every server, in this order: NATS, roomstate, the gateways
	gwPIDs, natsPID, rsPID := st.gatewayPIDs(), st.nats.pid, st.roomstate.pid
	servers := append([]int{natsPID, rsPID}, gwPIDs...)
	before, err := sampleEach(servers)
	if err != nil {
		return res, err
	}
	gwW := watchProcs(ctx, gwPIDs, 100*time.Millisecond)
	natsW := watchProcs(ctx, []int{natsPID}, 100*time.Millisecond)
	rsW := watchProcs(ctx, []int{rsPID}, time.Second)
	self0, _ := readProc(0)
	f, ready, err := startFleet(ctx, o, st.target(secret), modeFleet, o.Sockets)
	gwCPU, _ := gwW.Stop()
	natsCPU, _ := natsW.Stop()
	rsCPU, _ := rsW.Stop()
	if err != nil {
		return res, err
	}
	defer f.close()
	// the workers did nothing but connect so far: their CPU is the
	// connect's
	self1, _ := readProc(0)
	workersNow, _ := sumProcs(f.pids)
	toolCPU := self1.CPU - self0.CPU + workersNow.CPU
	fmt.Fprintf(log, "fleet: %d sockets over %d gateways (worker processes: %d, source addresses: %d) connected and joined in %s (%d failed)\n",
		ready.Connected, o.Gateways, len(f.pids), o.SourceIPs, ready.Took.Round(time.Millisecond), ready.Failed)
	if ready.Failed > 0 {
		fmt.Fprintf(log, "fleet: first error: %s\n", ready.FirstError)
	}
	if ready.Connected == 0 {
		return res, fmt.Errorf("fleet: no socket connected: %s", ready.FirstError)
	}
	sleepCtx(ctx, o.Settle)
	after, err := sampleEach(servers)
	if err != nil {
		return res, err
	}

	if o.Yield {
		// Clients elsewhere would not share the servers' cores: the
		// workers read the message at the lowest priority, and the
		// kernel's stamps say when it reached each socket.
		if err := lowestPriority(f.pids); err != nil {
			return res, fmt.Errorf("fleet: -yield: %w", err)
		}
		fmt.Fprintf(log, "fleet: the %d worker processes run at nice 19 for the message (-yield)\n", len(f.pids))
	}
	serverW := watchProcs(ctx, servers, time.Second)
	toolW := watchProcs(ctx, f.toolPIDs(), time.Second)
	msg, err := fleetMessage(ctx, o, st, f, ready.Connected)
	msgServerCPU, _ := serverW.Stop()
	msgToolCPU, _ := toolW.Stop()
	if err != nil {
		return res, err
	}
	fmt.Fprintf(log, "fleet: one message to %d sockets: acknowledged by JetStream in %s, in the last socket %s after the publish (read there by the tool after %s); %d sockets received it\n",
		ready.Connected, fmtDur(msg.acked), fmtDur(msg.arrived), fmtDur(msg.last), msg.reached)

	n := float64(ready.Connected)
	var gwBefore, gwAfter int64
	for k := range gwPIDs {
		gwBefore += before[2+k].RSS
		gwAfter += after[2+k].RSS
	}
	natsBefore, natsAfter := before[0].RSS, after[0].RSS
	kb := func(b int64) float64 { return float64(b) / 1024 / n }
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	serverCPU := gwCPU + natsCPU + rsCPU
	res.Connected, res.ConnectFailed = ready.Connected, ready.Failed
	res.Metrics = []metric{
		{Name: "sockets", Value: n, Higher: true},
		{Name: "gateways", Value: float64(len(gwPIDs))},
		{Name: "fleet RSS per socket (gateways + NATS, growth)", Value: kb(gwAfter + natsAfter - gwBefore - natsBefore), Unit: "KB"},
		{Name: "fleet RSS per socket (gateways + NATS, whole)", Value: kb(gwAfter + natsAfter), Unit: "KB"},
		{Name: "gateway RSS per socket (growth)", Value: kb(gwAfter - gwBefore), Unit: "KB"},
		{Name: "NATS RSS per socket (growth)", Value: kb(natsAfter - natsBefore), Unit: "KB"},
		{Name: "fleet RSS before", Value: mib(gwBefore + natsBefore), Unit: "MiB"},
		{Name: "fleet RSS with the sockets", Value: mib(gwAfter + natsAfter), Unit: "MiB"},
		{Name: "connect+join time", Value: ready.Took.Seconds(), Unit: "s"},
		{Name: "server CPU during connect (gateways, NATS, roomstate)", Value: serverCPU.Seconds(), Unit: "s"},
		{Name: "gateways' CPU during connect", Value: gwCPU.Seconds(), Unit: "s"},
		{Name: "NATS CPU during connect", Value: natsCPU.Seconds(), Unit: "s"},
		{Name: "roomstate CPU during connect", Value: rsCPU.Seconds(), Unit: "s"},
		{Name: "server CPU per connect", Value: float64(serverCPU) / float64(time.Microsecond) / n, Unit: "µs"},
		{Name: "tool CPU during connect", Value: toolCPU.Seconds(), Unit: "s"},
		{Name: "message: publish → JetStream ack", Value: ms(msg.acked), Unit: "ms"},
		{Name: "message: publish → live subject", Value: ms(msg.natsLeg), Unit: "ms"},
		{Name: "message: publish → in the last socket (kernel stamp)", Value: ms(msg.arrived), Unit: "ms"},
		{Name: "message: publish → read at the last socket (tool)", Value: ms(msg.last), Unit: "ms"},
		{Name: "message: p50 over the sockets", Value: ms(msg.latency.P50), Unit: "ms"},
		{Name: "message: p99 over the sockets", Value: ms(msg.latency.P99), Unit: "ms"},
		{Name: "message: server CPU, publish to the last report", Value: msgServerCPU.Seconds(), Unit: "s"},
		{Name: "message: tool CPU, publish to the last report", Value: msgToolCPU.Seconds(), Unit: "s"},
		{Name: "sockets that received it", Value: float64(msg.reached), Higher: true},
		{Name: "deliveries", Value: float64(msg.delivered)},
	}
	for k, g := range st.gateways {
		res.Notes = append(res.Notes, fmt.Sprintf("%s (pid %d, ~%d sockets): RSS %.1f → %.1f MiB",
			g.name, g.pid, ceilDiv(ready.Connected-k, len(gwPIDs)), mib(before[2+k].RSS), mib(after[2+k].RSS)))
	}
	res.Notes = append(res.Notes,
		fmt.Sprintf("nats (pid %d): RSS %.1f → %.1f MiB", natsPID, mib(natsBefore), mib(natsAfter)),
		fmt.Sprintf("roomstate (pid %d; it answers each join's roomstate.getmany, and is not counted in the fleet's RSS): RSS %.1f → %.1f MiB",
			rsPID, mib(before[1].RSS), mib(after[1].RSS)),
		fmt.Sprintf("worker processes: %d; source addresses: 127.0.0.1 … 127.0.0.%d; RSS read from /proc %s after the last join",
			len(f.pids), o.SourceIPs, o.Settle),
		"message times: the publish by the publisher's wall clock (time.Now), the arrival at each socket by the kernel's receive stamp (SO_TIMESTAMPNS), the tool's read by the worker's wall clock: one machine's CLOCK_REALTIME")
	if o.Yield {
		res.Notes = append(res.Notes, "the worker processes read the message at nice 19 (-yield): the arrivals are the servers' alone, the reads come after")
	}
	if msg.reached < int64(ready.Connected) {
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d sockets did not receive the message within %s of the last receipt",
			int64(ready.Connected)-msg.reached, ready.Connected, o.Drain))
	}
	return res, nil
}

// fleetMsg is what one message to the whole room measured.
type fleetMsg struct {
	acked, natsLeg, last time.Duration
	// arrived: to when the last socket had the message in its receive
	// queue, by the kernel's stamps; last: to when a worker read it there
	arrived            time.Duration
	latency            Summary
	reached, delivered int64
}

// fleetMessage publishes one message to the board every socket joined and
// waits until every one of want sockets has it, or none more arrives for
// o.Drain.
func fleetMessage(ctx context.Context, o options, st *fleetStack, f *fleet, want int) (fleetMsg, error) {
	var m fleetMsg
	const step = 1
	if _, err := f.command(ctx, workerCmd{Cmd: "step", Step: step}); err != nil {
		return m, err
	}
	stopLeg, err := watchNATSLeg(st.nats.nc, step)
	if err != nil {
		return m, err
	}
	defer func() {
		if stopLeg != nil {
			stopLeg()
		}
	}()
	pub := &natsPublisher{js: st.nats.js, enc: proto.NewPublisher(st.nats.js, proto.Subjects{})}
	t0 := time.Now()
	room, env, err := benchEnvelope(0, 0, step, t0, "")
	if err != nil {
		return m, err
	}
	if err := pub.add(ctx, room, env); err != nil {
		return m, err
	}
	if _, err := pub.wait(ctx); err != nil {
		return m, err
	}
	m.acked = time.Since(t0)

	var reached int64
	lastProgress := time.Now()
	for reached < int64(want) && time.Since(lastProgress) < o.Drain {
		evs, err := f.command(ctx, workerCmd{Cmd: "report"})
		if err != nil {
			return m, err
		}
		var r int64
		for _, ev := range evs {
			r += ev.Reached
		}
		if r != reached {
			reached, lastProgress = r, time.Now()
		}
		if reached < int64(want) {
			sleepCtx(ctx, 10*time.Millisecond)
		}
	}
	evs, err := f.command(ctx, workerCmd{Cmd: "report", Full: true})
	if err != nil {
		return m, err
	}
	h := NewHistogram()
	var lastNs, arrivalNs int64
	for _, ev := range evs {
		m.reached += ev.Reached
		m.delivered += int64(ev.Delivered)
		lastNs = max(lastNs, ev.LastNs)
		arrivalNs = max(arrivalNs, ev.LastArrivalNs)
		if ev.Hist != nil {
			wh, err := HistogramFromData(*ev.Hist)
			if err != nil {
				return m, err
			}
			h.Merge(wh)
		}
	}
	m.latency = h.Summary()
	if lastNs > 0 {
		m.last = time.Duration(lastNs - t0.UnixNano())
	}
	if arrivalNs > 0 {
		m.arrived = time.Duration(arrivalNs - t0.UnixNano())
	}
	m.natsLeg = stopLeg().Max // one message: its only sample
	stopLeg = nil
	return m, nil
}

// sampleEach samples every pid, in order.
func sampleEach(pids []int) ([]procSample, error) {
	out := make([]procSample, len(pids))
	for i, p := range pids {
		s, err := readProc(p)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// fleetHeading names the markdown section of a fleet run.
func fleetHeading(o options) string {
	return fmt.Sprintf("%s sockets over %d gateways", groupThousands(o.Sockets), o.Gateways)
}

// groupThousands writes n with commas: 100000 → "100,000".
func groupThousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
