package bench

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFleetAgainstRoomcast runs bench fleet small: NATS, roomstate and two
// gateways as processes of their own, the sockets in two worker processes
// spread over both gateways, all in one room. The one message reaches
// every socket exactly once, the servers' figures are read, and every
// process the tool started is gone when it returns.
func TestFleetAgainstRoomcast(t *testing.T) {
	bin := roomcastBinary(t)
	o := tinyOptions(t, modeFleet, "-bin", bin, "-sockets", "300", "-gateways", "2", "-procs", "2", "-settle", "100ms")
	log := logTo(t)
	rs, err := run(t.Context(), o, log)
	require.NoError(t, err, log.String())
	require.Len(t, rs, 1)
	r := rs[0]
	require.Equal(t, 300, r.Connected, log.String())
	require.Equal(t, 300.0, metricOf(t, r, "sockets that received it"), "every socket has the message: "+log.String())
	require.Equal(t, 300.0, metricOf(t, r, "deliveries"), "once each")
	require.Equal(t, 2.0, metricOf(t, r, "gateways"))
	read := metricOf(t, r, "message: publish → read at the last socket (tool)")
	require.Positive(t, read)
	require.GreaterOrEqual(t, read, metricOf(t, r, "message: p50 over the sockets"))
	// the kernel's stamp of the last arrival: after the publish, and never
	// after a worker read it (the same wall clock)
	arrived := metricOf(t, r, "message: publish → in the last socket (kernel stamp)")
	require.Positive(t, arrived)
	require.LessOrEqual(t, arrived, read)
	require.GreaterOrEqual(t, arrived, metricOf(t, r, "message: p99 over the sockets"), "the sockets' latencies are their arrivals too")
	require.Contains(t, log.String(), "fleet: the 2 worker processes run at nice 19 for the message (-yield)")
	require.Positive(t, metricOf(t, r, "fleet RSS with the sockets"))
	require.Positive(t, metricOf(t, r, "connect+join time"))
	pids := startedPIDs(t, log.String(), 4) // NATS, roomstate, two gateways
	requireGone(t, pids)
	require.Len(t, regexp.MustCompile(`(?m)^fleet: gateway \d at `).FindAllString(log.String(), -1), 2, "both gateways served: "+log.String())
}

// TestFleetStopsEverythingWhenAWorkerCannotStart: the servers are up when
// the worker processes fail at once; the run says so, and stops NATS,
// roomstate and the gateways.
func TestFleetStopsEverythingWhenAWorkerCannotStart(t *testing.T) {
	bin := roomcastBinary(t)
	t.Setenv(failWorkerEnv, "1")
	o := tinyOptions(t, modeFleet, "-bin", bin, "-sockets", "20", "-gateways", "2", "-procs", "2", "-settle", "0s")
	log := logTo(t)
	_, err := run(t.Context(), o, log)
	require.ErrorContains(t, err, "worker 0 ended", log.String())
	requireGone(t, startedPIDs(t, log.String(), 4))
}

// TestFleetStopsNATSWhenAGatewayCannotStart: gateways that exit before they
// are ready (here: a setting they refuse, which the tool's environment
// passes on) fail the run with their log, and NATS and roomstate are
// stopped.
func TestFleetStopsNATSWhenAGatewayCannotStart(t *testing.T) {
	bin := roomcastBinary(t)
	t.Setenv("ROOMCAST_PING_INTERVAL", "soon")
	o := tinyOptions(t, modeFleet, "-bin", bin, "-sockets", "20", "-gateways", "2")
	log := logTo(t)
	_, err := run(t.Context(), o, log)
	require.ErrorContains(t, err, "gateway 1: exited before it was ready")
	require.ErrorContains(t, err, "ROOMCAST_PING_INTERVAL", "the gateway's own words, from its log")
	requireGone(t, startedPIDs(t, log.String(), 1))
}

var pidRE = regexp.MustCompile(`\(pid (\d+)\)`)

// startedPIDs are the pids the run's log names, at least want of them, and
// no child of this process is left.
func startedPIDs(t *testing.T, log string, want int) []int {
	t.Helper()
	var pids []int
	for _, m := range pidRE.FindAllStringSubmatch(log, -1) {
		p, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		pids = append(pids, p)
	}
	require.GreaterOrEqual(t, len(pids), want, log)
	return pids
}

// requireGone waits (a few seconds at most) until none of pids runs and
// this process has no children left.
func requireGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var alive []int
		for _, p := range pids {
			if syscall.Kill(p, 0) == nil {
				alive = append(alive, p)
			}
		}
		kids := childrenOf(t, os.Getpid())
		if len(alive) == 0 && len(kids) == 0 {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("still running: started %v, children of the test %v", alive, kids)
		case <-tick.C:
		}
	}
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var kids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		i := bytes.LastIndexByte(stat, ')')
		f := bytes.Fields(stat[i+1:])
		if len(f) > 1 && string(f[1]) == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}

func TestFleetOptions(t *testing.T) {
	o, err := parseOptions([]string{modeFleet, "-sockets", "100000"}, os.Stderr)
	require.NoError(t, err)
	budget := socketBudget()
	require.Equal(t, (100000+budget-1)/budget, o.Gateways, "as few gateways as hold the sockets")
	require.Equal(t, (100000+budget-1)/budget, o.Procs, "as few worker processes as hold the sockets")
	require.Equal(t, (64*13+o.Procs-1)/o.Procs, o.DialConcurrency, "as many connects in flight as 13 workers of 64")
	require.Equal(t, 10, o.SourceIPs, "one loopback address per 10,000 sockets")
	require.Equal(t, 1, o.Rooms, "one room")

	o, err = parseOptions([]string{modeFleet, "-sockets", "300", "-gateways", "2", "-source-ips", "3", "-procs", "3"}, os.Stderr)
	require.NoError(t, err)
	require.Equal(t, 2, o.Gateways)
	require.Equal(t, 3, o.Procs, "given, kept")
	require.Equal(t, 3, o.SourceIPs, "given, kept")
}

func TestFleetRefusals(t *testing.T) {
	const budget = 19900 // this machine: ulimit -Hn 20000, less the reserve
	o := options{Mode: modeFleet, Target: targetRoomcast, Transport: transportWebSocket, Sockets: 100000, Gateways: 5, Rooms: 1}
	err := o.checkFleet(budget)
	require.ErrorContains(t, err, "20000 sockets per gateway")
	require.ErrorContains(t, err, "give -gateways 6 or more, or -sockets 99500 or fewer")
	o.Gateways = 6
	require.NoError(t, o.checkFleet(budget))
	o.Procs = 5
	require.ErrorContains(t, o.checkFleet(budget), "give -procs 6 or more")

	for _, args := range [][]string{
		{"-target", "socketio"}, {"-compare"}, {"-pin"}, {"-rooms", "3"}, {"-transport", "polling"}, {"-recovery", "off"},
		{"-url", "http://127.0.0.1:1", "-secret", "s", "-nats", "nats://127.0.0.1:2"},
	} {
		_, err := parseOptions(append([]string{modeFleet, "-sockets", "100"}, args...), os.Stderr)
		require.Error(t, err, "%v", args)
	}
}
