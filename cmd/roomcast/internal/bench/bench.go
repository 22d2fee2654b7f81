// Package bench is roomcast's load tool: it drives real sockets over the
// Socket.IO protocol and publishes through NATS, against roomcast or a
// reference peer, and reports throughput, latency and server resources.
//
// One process, the coordinator, starts the server(s) under test, publishes
// and aggregates; the sockets live in workers (in the coordinator's process,
// or in worker processes when there are more sockets than one process may
// hold). Everything is bounded: a run ends by itself after -timeout.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/roomcast/roomcast/proto"
)

// The modes.
const (
	modeFanout   = "fanout"
	modeIdle     = "idle"
	modeStorm    = "storm"
	modeResync   = "resync"
	modeFairness = "fairness"
	modeFleet    = "fleet"
	modeWorker   = "worker" // internal: a worker process
)

const usage = `usage: roomcast bench MODE [flags]

modes:
  fanout  N sockets over R boards, messages at a fixed rate (or a ramp of rates):
          deliveries/s, delivered vs expected, latency p50/p90/p99/max,
          server CPU and peak RSS
  idle    N sockets each in 3 rooms, idle: server RSS per socket
  storm   N sockets dropped at once: time until all are back and rejoined;
          -cut-broadcasts: with broadcasts published while they are away, how
          many came back recovered with every one they missed, or resynced
  resync  getChangesSince latency with a large stream (roomcast only)
  fairness  one user's flood of history reads (-attack-sockets sockets, each
          sending -attack-calls getChangesSince(since: 0) at once on a room of
          -attack-msgs messages, again and again) while another user reads a
          small room's -changes changes: that user's p50/p99 (roomcast only)
  fleet   N sockets over several gateway processes on one NATS process, all in
          one room: fleet RSS per socket (gateways plus NATS), connect time
          and CPU, then one message to the room: publish to the last socket
  roomstate  roomstate alone: publish -> KV ROOM_STATE visible lag and KV writes
          per event, with flags of its own (roomcast bench roomstate -h)

The tool starts the server itself (roomcast: this binary's "serve" on free
loopback ports; socketio: node bench/peer/server.mjs; centrifugo: Centrifugo
v6.9.1, built once from its Go module into the user cache folder, with a
generated config), or attaches to one with -url (and -nats, -secret,
-server-pid). -compare runs the peers (-peers), then roomcast, and prints
them side by side with the ratios roomcast/peer. -recovery both runs roomcast
twice, connection state recovery on then off (ROOMCAST_RECOVERY_TTL=0), side
by side. -pin runs the server on core 0 (Go servers with GOMAXPROCS=1) and
the tool on core 1.

flags:`

// options are the tool's flags.
type options struct {
	Mode    string
	Target  string
	Compare bool
	Peers   []string // -compare: the peers run before roomcast
	Pin     bool

	URL       string
	NATS      string
	Secret    string
	ServerPID int
	Bin       string
	PeerDir   string
	Node      string
	Authz     bool

	CentrifugoBin string

	Sockets          int
	Rooms            int
	Gateways         int  // fleet: gateway processes (0: as few as the descriptor limit allows)
	Yield            bool // fleet: the worker processes at nice 19 during the message
	Procs            int
	SourceIPs        int
	DialConcurrency  int
	StormConcurrency int
	Transport        string // Socket.IO targets: websocket or polling
	Deflate          bool   // WebSocket sockets offer permessage-deflate
	// Recovery is roomcast's connection state recovery: "" as the server
	// is configured, on, off (ROOMCAST_RECOVERY_TTL=0), or both (one run
	// each).
	Recovery      string
	CutBroadcasts int // storm: broadcasts per board published while the sockets are away

	Rate        float64
	Duration    time.Duration
	Drain       time.Duration
	Pad         int
	Ramp        bool
	RampFactor  float64
	MaxSteps    int
	MaxP99      time.Duration
	MinDelivery float64

	Settle        time.Duration
	Jitter        time.Duration
	StormDeadline time.Duration

	StreamMsgs int
	Changes    int
	Queries    int
	QueryAfter time.Duration

	AttackSockets int
	AttackCalls   int
	AttackMsgs    int
	AttackRedial  time.Duration

	Timeout    time.Duration
	JSON       bool
	Markdown   bool
	Plot       string
	CPUProfile string

	ServerCPUProfile string
	ProfileSeconds   int
	// PerfDir: fanout records the server with perf during each step into
	// this folder and splits its CPU per delivery (cpusplit.go).
	PerfDir string
}

// parseOptions reads MODE and the flags, and checks them.
func parseOptions(args []string, errOut io.Writer) (options, error) {
	var o options
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprintln(errOut, usage)
			return o, flag.ErrHelp
		}
		return o, errors.New("give a mode: fanout, idle, storm, resync, fairness, fleet or roomstate (roomcast bench -h)")
	}
	o.Mode = args[0]
	fs := flag.NewFlagSet("bench "+o.Mode, flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() { fmt.Fprintln(errOut, usage); fs.PrintDefaults() }
	fs.StringVar(&o.Target, "target", targetRoomcast, "what to measure: roomcast, socketio (the Socket.IO reference peer; also \"peer\") or centrifugo")
	fs.BoolVar(&o.Compare, "compare", false, "run the peers (-peers), then roomcast, and print them side by side with the ratios")
	peers := fs.String("peers", targetPeer+","+targetCentrifugo, "-compare: the peers to run, comma-separated: socketio, centrifugo")
	fs.BoolVar(&o.Pin, "pin", false, "run the server under taskset on core 0 (Go servers with GOMAXPROCS=1) and the load tool on core 1")
	fs.StringVar(&o.CentrifugoBin, "centrifugo", "", "Centrifugo binary to run (default: v6.9.1 built from its Go module into the user cache folder, reused when present)")
	fs.StringVar(&o.URL, "url", "", "attach to a running target at this http://host:port instead of starting one")
	fs.StringVar(&o.NATS, "nats", "", "roomcast's NATS URL, with -url")
	fs.StringVar(&o.Secret, "secret", "", "HS256 JWT secret of the target (default: random, given to the started server)")
	fs.IntVar(&o.ServerPID, "server-pid", 0, "the target's pid for CPU and RSS from /proc, with -url")
	fs.StringVar(&o.Bin, "bin", "", "roomcast binary to start with `serve` (default: this one)")
	fs.StringVar(&o.PeerDir, "peer-dir", "", "directory of the reference peer (default: bench/peer above the working directory)")
	fs.StringVar(&o.Node, "node", "node", "node binary for the reference peer")
	fs.BoolVar(&o.Authz, "authz", true, "answer authz.join with allow over NATS (roomcast: org and board rooms need an answer)")
	fs.IntVar(&o.Sockets, "sockets", 1000, "number of sockets")
	fs.IntVar(&o.Rooms, "rooms", 10, "number of boards the sockets are spread over")
	fs.IntVar(&o.Gateways, "gateways", 0, "fleet: gateway processes, socket i on gateway i mod N (0: as few as hold the sockets under the limit on open files)")
	fs.BoolVar(&o.Yield, "yield", true, "fleet: during the message, every thread of the worker processes at nice 19, so that on one machine the clients reading it do not take the servers' CPU (the time to the last socket is the kernel's arrival stamp either way; the time the tool read it is printed too)")
	fs.IntVar(&o.Procs, "procs", 0, fmt.Sprintf("worker processes holding the sockets (0: one per %d sockets, fleet: as few as fit; 1: in this process)", maxSocketsPerProc))
	fs.IntVar(&o.SourceIPs, "source-ips", 1, "dial from 127.0.0.1 … 127.0.0.N, for more sockets than one address has ephemeral ports (fleet: one per 10,000 sockets unless given)")
	fs.IntVar(&o.DialConcurrency, "dial-concurrency", 64, "connects in flight per worker (the sockets' first connects)")
	fs.IntVar(&o.StormConcurrency, "storm-concurrency", 0, "storm: reconnects in flight per worker after the drop (0: no bound, every socket reconnects at once)")
	fs.StringVar(&o.Transport, "transport", transportWebSocket, "idle, fanout against roomcast or socketio: the sockets' Engine.IO transport, websocket or polling (long-polling from the open on, no upgrade)")
	fs.StringVar(&o.Recovery, "recovery", "", "roomcast started by the tool: connection state recovery on (the server's default TTL), off (ROOMCAST_RECOVERY_TTL=0), or both: a run each, side by side (default: as the environment says)")
	fs.IntVar(&o.CutBroadcasts, "cut-broadcasts", 0, "storm (roomcast): publish this many broadcasts to each board while the sockets are away (they come back once the server has seen them all go and the broadcasts are stored), and count who got every one: recovered (replayed) or resynced (getChangesSince)")
	fs.BoolVar(&o.Deflate, "deflate", false, "WebSocket sockets of roomcast and socketio offer permessage-deflate (no context takeover) and inflate what comes compressed; fanout's \"bytes per delivery\" shows the saving")
	fs.Float64Var(&o.Rate, "rate", 100, "fanout: messages per second (each goes to one board: deliveries/s = rate × sockets/rooms)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "fanout: publishing time of a step")
	fs.DurationVar(&o.Drain, "drain", 3*time.Second, "fanout: after publishing, wait this long without progress before counting what is missing")
	fs.IntVar(&o.Pad, "pad", 0, "fanout: extra bytes in each message")
	fs.BoolVar(&o.Ramp, "ramp", false, "fanout: raise the rate step by step until p99 or delivery fails; report the last step that held")
	fs.Float64Var(&o.RampFactor, "ramp-factor", 1.5, "fanout: rate multiplier between ramp steps")
	fs.IntVar(&o.MaxSteps, "max-steps", 10, "fanout: most ramp steps")
	fs.DurationVar(&o.MaxP99, "max-p99", 100*time.Millisecond, "fanout: a step holds while p99 is at most this")
	fs.Float64Var(&o.MinDelivery, "min-delivery", 0.999, "fanout: a step holds while this fraction of the expected deliveries arrive")
	fs.DurationVar(&o.Settle, "settle", 2*time.Second, "idle, storm: quiet time before measuring")
	fs.DurationVar(&o.Jitter, "jitter", 0, "storm: each socket reconnects after a random delay up to this (0: at once)")
	fs.DurationVar(&o.StormDeadline, "storm-deadline", time.Minute, "storm: give up waiting for sockets after this")
	fs.IntVar(&o.StreamMsgs, "stream-msgs", 100000, "resync: background messages stored before the changes")
	fs.IntVar(&o.Changes, "changes", 100, "resync: changes in the queried room")
	fs.IntVar(&o.Queries, "queries", 200, "resync: getChangesSince calls timed")
	fs.DurationVar(&o.QueryAfter, "query-after", 0, "resync: start the queries no sooner than this after the last publish (e.g. 2m10s: past the stream's 2-minute duplicate window, once the server has let go of the fill's message IDs)")
	fs.IntVar(&o.AttackSockets, "attack-sockets", 40, "fairness: the attacker's sockets")
	fs.IntVar(&o.AttackCalls, "attack-calls", 8, "fairness: getChangesSince calls each attacking socket sends at once")
	fs.IntVar(&o.AttackMsgs, "attack-msgs", 10000, "fairness: messages in the attacked room")
	fs.DurationVar(&o.AttackRedial, "attack-redial", time.Second, "fairness: an attacking socket closed or refused by the server dials again after this (1s: the stock client's first reconnection delay; 0: at once)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "stop everything after this")
	fs.BoolVar(&o.JSON, "json", false, "print the results as JSON instead of a table")
	fs.BoolVar(&o.Markdown, "markdown", false, "print the results as a markdown section (command, machine, table) for docs/performance.md")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write the load tool's own CPU profile (coordinator and in-process worker) here; storm: over the storm only")
	fs.StringVar(&o.ServerCPUProfile, "server-cpuprofile", "", "storm, resync (roomcast): write the server's CPU profile over the storm, or the queries, here (started with ROOMCAST_PPROF=1, or attached to one that serves /debug/pprof)")
	fs.StringVar(&o.PerfDir, "perf", "", "fanout: record the server with perf (call stacks, 999 Hz) during each step into this folder, and split its CPU per delivery: user space, the kernel's send, the receive run in its context (on loopback, its clients'), other kernel; the CPU figures then include perf's own cost")
	fs.IntVar(&o.ProfileSeconds, "profile-seconds", 5, "storm: length of the server's CPU profile, from the drop")
	fs.StringVar(&o.Plot, "plot", "", "fanout: write a PNG of p99 latency against deliveries/s, a point per step (roomcast blue, peer orange)")
	if err := fs.Parse(args[1:]); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.Mode == modeFleet {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		o.fleetDefaults(given, socketBudget())
	}
	if o.Target == targetPeerOld {
		o.Target = targetPeer
	}
	for _, p := range strings.Split(*peers, ",") {
		p = strings.TrimSpace(p)
		if p == targetPeerOld {
			p = targetPeer
		}
		if p == "" || slices.Contains(o.Peers, p) {
			continue
		}
		o.Peers = append(o.Peers, p)
	}
	return o, o.check()
}

func (o options) check() error {
	switch o.Mode {
	case modeFanout, modeIdle, modeStorm, modeResync, modeFairness, modeFleet:
	default:
		return fmt.Errorf("unknown mode %q: want fanout, idle, storm, resync, fairness, fleet or roomstate", o.Mode)
	}
	if o.Mode == modeFleet {
		if err := o.checkFleet(socketBudget()); err != nil {
			return err
		}
	}
	if o.Target != targetRoomcast && o.Target != targetPeer && o.Target != targetCentrifugo {
		return fmt.Errorf("-target %q: want roomcast, socketio or centrifugo", o.Target)
	}
	for _, p := range o.Peers {
		if p != targetPeer && p != targetCentrifugo {
			return fmt.Errorf("-peers: %q is not a peer: want socketio or centrifugo", p)
		}
	}
	switch {
	case o.Compare && len(o.Peers) == 0:
		return errors.New("-compare needs at least one peer in -peers (socketio, centrifugo)")
	case o.Compare && o.URL != "":
		return errors.New("-compare starts every server itself; drop -url")
	case o.Pin && o.URL != "":
		return errors.New("-pin starts the server under taskset; drop -url")
	case o.URL != "" && o.Secret == "":
		return errors.New("-url needs the target's JWT secret: give -secret")
	case o.URL != "" && o.Target == targetRoomcast && o.NATS == "":
		return errors.New("-url with roomcast needs its NATS URL: give -nats")
	case o.URL != "" && !strings.HasPrefix(o.URL, "http://"):
		return fmt.Errorf("-url %q: want http://host:port", o.URL)
	case o.URL != "" && !loopback(o.URL), o.NATS != "" && !loopback(o.NATS):
		return errors.New("-url and -nats must be on this machine (127.0.0.0/8, localhost or [::1]): a load test sends traffic nowhere else")
	case (o.Mode == modeResync || o.Mode == modeFairness) && o.Target != targetRoomcast && !o.Compare:
		return fmt.Errorf("%s measures roomcast's history; the peers keep none", o.Mode)
	case o.URL != "" && o.Target == targetCentrifugo:
		return errors.New("-url with centrifugo: the tool needs the HTTP API key of a Centrifugo it starts itself; drop -url")
	case o.Mode == modeFairness && (o.AttackSockets < 1 || o.AttackCalls < 1 || o.AttackMsgs < 1):
		return errors.New("-attack-sockets, -attack-calls and -attack-msgs must be at least 1")
	case o.Transport != transportWebSocket && o.Transport != transportPolling:
		return fmt.Errorf("-transport %q: want websocket or polling", o.Transport)
	case o.Transport == transportPolling && o.Mode != modeIdle && o.Mode != modeFanout:
		return fmt.Errorf("-transport polling: for idle and fanout only, not %s", o.Mode)
	case o.Transport == transportPolling && (o.Target == targetCentrifugo || slices.Contains(o.Peers, targetCentrifugo) && o.Compare):
		return errors.New("-transport polling: Socket.IO targets only (roomcast, socketio); the Centrifugo client here speaks WebSocket")
	case o.Deflate && o.Transport == transportPolling:
		return errors.New("-deflate is a WebSocket extension: not with -transport polling")
	case o.Deflate && (o.Target == targetCentrifugo || slices.Contains(o.Peers, targetCentrifugo) && o.Compare):
		return errors.New("-deflate: Socket.IO targets only (roomcast, socketio)")
	case o.Recovery != "" && o.Recovery != recoveryOn && o.Recovery != recoveryOff && o.Recovery != recoveryBoth:
		return fmt.Errorf("-recovery %q: want on, off or both", o.Recovery)
	case o.Recovery != "" && (o.Target != targetRoomcast || o.Compare):
		return errors.New("-recovery is roomcast's: with -target roomcast and without -compare")
	case o.Recovery != "" && o.URL != "":
		return errors.New("-recovery starts roomcast with ROOMCAST_RECOVERY_TTL; drop -url (or start the server with it yourself)")
	case o.PerfDir != "" && o.Mode != modeFanout:
		return fmt.Errorf("-perf: fanout only, not %s", o.Mode)
	case o.PerfDir != "" && o.URL != "" && o.ServerPID == 0:
		return errors.New("-perf with -url: give the server's -server-pid to record")
	case o.CutBroadcasts < 0:
		return fmt.Errorf("-cut-broadcasts %d: want 0 or more", o.CutBroadcasts)
	case o.CutBroadcasts > 0 && (o.Mode != modeStorm || o.Target != targetRoomcast || o.Compare):
		return errors.New("-cut-broadcasts: storm against roomcast only (the missed broadcasts come back from its stream), without -compare")
	case o.Sockets < 1:
		return fmt.Errorf("-sockets %d: want at least 1", o.Sockets)
	case o.Rooms < 1:
		return fmt.Errorf("-rooms %d: want at least 1", o.Rooms)
	case o.Rate <= 0:
		return fmt.Errorf("-rate %g: want more than 0", o.Rate)
	case o.Duration <= 0 || o.Drain < 0 || o.Timeout <= 0:
		return errors.New("-duration and -timeout must be positive, -drain not negative")
	case o.Ramp && o.RampFactor <= 1:
		return fmt.Errorf("-ramp-factor %g: want more than 1", o.RampFactor)
	case o.MinDelivery < 0 || o.MinDelivery > 1:
		return fmt.Errorf("-min-delivery %g: want a fraction from 0 to 1", o.MinDelivery)
	case o.DialConcurrency < 0 || o.StormConcurrency < 0:
		return errors.New("-dial-concurrency and -storm-concurrency must not be negative")
	case o.SourceIPs < 1 || o.SourceIPs > 254:
		return fmt.Errorf("-source-ips %d: want 1 to 254", o.SourceIPs)
	case o.Pad < 0 || o.Pad > 64<<10:
		return fmt.Errorf("-pad %d: want 0 to 65536", o.Pad)
	case o.StreamMsgs < 0 || o.Changes < 1 || o.Queries < 1:
		return errors.New("-stream-msgs must be ≥ 0, -changes and -queries ≥ 1")
	}
	return nil
}

// loopback reports whether a URL's host is a loopback address.
func loopback(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Main runs `roomcast bench ARGS`.
func Main(ctx context.Context, args []string, stdout io.Writer) error {
	if (len(args) > 0 && args[0] == modeWorker) || os.Getenv(workerEnv) == "1" {
		raiseFileLimit()
		return workerMain(ctx)
	}
	if len(args) > 0 && args[0] == modeFleetNATS {
		return fleetNATSMain(ctx, args[1:])
	}
	if len(args) > 0 && (args[0] == ModeFleetGateway || args[0] == modeFleetRoomstate) {
		raiseFileLimit()
		return fleetServiceMain(ctx, args[0])
	}
	if len(args) > 0 && args[0] == modeRoomstate {
		return runRoomstate(ctx, args[1:], stdout, os.Stderr)
	}
	o, err := parseOptions(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		// the CLI exits 2 on invalid_argument: a bad command line, nothing done
		return proto.Errorf(proto.CodeInvalidArgument, "%v", err)
	}
	raiseFileLimit()
	if o.Pin {
		if err := pinTool(); err != nil {
			return err
		}
	}
	if o.CPUProfile != "" && o.Mode != modeStorm { // storm profiles the storm alone (runStorm)
		stop, err := startToolProfile(o.CPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	rs, err := run(ctx, o, os.Stderr)
	if err != nil {
		return err
	}
	if o.Plot != "" && o.Mode == modeFanout {
		if err := savePlot(o.Plot, rs, ms(o.MaxP99)); err != nil {
			return err
		}
	}
	if o.JSON {
		return writeJSON(stdout, rs)
	}
	rs = roomcastFirst(rs)
	if o.Markdown {
		printMarkdown(stdout, o.heading(), args, rs)
		return nil
	}
	for _, r := range rs {
		printSteps(stdout, r)
	}
	printResults(stdout, o.Mode, rs)
	return nil
}

// run measures o.Mode on the target(s), logging progress to log.
func run(ctx context.Context, o options, log io.Writer) ([]result, error) {
	if o.Mode == modeFleet {
		r, err := runFleet(ctx, o, log)
		if err != nil {
			return nil, err
		}
		return []result{r}, nil
	}
	targets := []string{o.Target}
	if o.Compare {
		targets = append(slices.Clone(o.Peers), targetRoomcast)
		if o.Mode == modeResync || o.Mode == modeFairness {
			targets = []string{targetRoomcast}
			fmt.Fprintf(log, "%s: the peers keep no history; measuring roomcast alone\n", o.Mode)
		}
	}
	runs := []options{o}
	if o.Recovery == recoveryBoth {
		on, off := o, o
		on.Recovery, off.Recovery = recoveryOn, recoveryOff
		runs = []options{on, off}
	}
	var rs []result
	for _, t := range targets {
		for _, o := range runs {
			if o.Recovery != "" {
				fmt.Fprintf(log, "%s: connection state recovery %s\n", t, o.Recovery)
			}
			r, err := runOne(ctx, o, t, log)
			if err != nil {
				return rs, fmt.Errorf("%s: %w", t, err)
			}
			if o.Pin {
				r.Notes = append(r.Notes, pinNote(t))
			}
			if o.Deflate {
				r.Notes = append(r.Notes, "the sockets offer permessage-deflate (no context takeover)")
			}
			if o.Transport == transportPolling {
				r.Notes = append(r.Notes, "the sockets long-poll (Engine.IO transport=polling, no upgrade)")
			}
			rs = append(rs, labelRecovery(r, o, len(runs) > 1))
		}
	}
	return rs, nil
}

// The settings of -recovery.
const (
	recoveryOn   = "on"
	recoveryOff  = "off"
	recoveryBoth = "both"
)

// labelRecovery names a run by its recovery setting: the column's name when
// both ran (recovery-on, recovery-off), a note otherwise.
func labelRecovery(r result, o options, both bool) result {
	switch {
	case o.Recovery == "":
	case both:
		r.Target = "recovery-" + o.Recovery
	default:
		r.Notes = append(r.Notes, "connection state recovery "+o.Recovery)
	}
	return r
}

func runOne(ctx context.Context, o options, target string, log io.Writer) (result, error) {
	srv, err := startServer(ctx, o, target, log)
	if err != nil {
		return result{}, err
	}
	defer srv.close()
	fmt.Fprintf(log, "%s: serving at %s (pid %d)\n", target, srv.url, srv.pid)
	switch o.Mode {
	case modeIdle:
		return runIdle(ctx, o, srv, log)
	case modeStorm:
		return runStorm(ctx, o, srv, log)
	case modeResync:
		return runResync(ctx, o, srv, log)
	case modeFairness:
		return runFairness(ctx, o, srv, log)
	}
	return runFanout(ctx, o, srv, log)
}

func savePlot(path string, rs []result, maxP99 float64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := writePlot(f, rs, maxP99); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// raiseFileLimit lifts the soft limit on open files to the hard one: every
// socket is a file descriptor.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// startToolProfile starts the load tool's CPU profile into path; stop ends
// and writes it.
func startToolProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// heading names a markdown section: the mode, and the transport or the
// compression when not the default, so that make bench's several fan-outs
// are told apart.
func (o options) heading() string {
	if o.Mode == modeFleet {
		return fleetHeading(o)
	}
	h := o.Mode
	if o.Transport == transportPolling {
		h += " over long-polling"
	}
	if o.Deflate {
		h += " with permessage-deflate"
	}
	if o.Recovery == recoveryOn || o.Recovery == recoveryOff {
		h += ", connection state recovery " + o.Recovery
	}
	return h
}
