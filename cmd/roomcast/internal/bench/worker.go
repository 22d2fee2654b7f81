package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/cfclient"
	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"github.com/roomcast/roomcast/cmd/roomcast/internal/wsclient"
	"github.com/roomcast/roomcast/proto"
)

// A worker holds a shard of the benchmark's sockets, in the coordinator's
// process (one shard) or in a process of its own (`roomcast bench worker`,
// started by the coordinator: one process cannot hold more sockets than its
// file descriptor limit). It talks to the coordinator in JSON lines: it
// reads its workerConfig, then commands, and writes events.

// workerEnv marks a process started as a worker; tests use it to turn the
// test binary into one.
const workerEnv = "ROOMCAST_BENCH_WORKER"

// workerConfig is a worker's first input line.
type workerConfig struct {
	URL string `json:"url"`
	// URLs, when set, are several servers' URLs (bench fleet's gateways):
	// socket i dials URLs[i mod len(URLs)] instead of URL.
	URLs   []string `json:"urls,omitempty"`
	Secret string   `json:"secret"`
	Mode   string   `json:"mode"`
	// Protocol is the sockets' protocol: protoSocketIO (roomcast and the
	// Socket.IO peer) or protoCentrifugo.
	Protocol        string        `json:"protocol,omitempty"`
	Polling         bool          `json:"polling,omitempty"` // Socket.IO over Engine.IO long-polling
	Deflate         bool          `json:"deflate,omitempty"` // WebSocket: offer permessage-deflate
	First           int           `json:"first"`             // index of the first socket of the shard
	Count           int           `json:"count"`
	Rooms           int           `json:"rooms"`
	SourceIPs       int           `json:"sourceIPs"`
	DialConcurrency int           `json:"dialConcurrency"`
	ConnectTimeout  time.Duration `json:"connectTimeout"`
	Jitter          time.Duration `json:"jitter"` // storm: reconnect after a random delay up to this
	// StormConcurrency bounds the reconnects in flight after a drop; 0:
	// none, every dropped socket reconnects at once, as thousands of
	// independent clients do.
	StormConcurrency int `json:"stormConcurrency"`
	// Stamped has the kernel stamp each socket's arrivals (bench fleet):
	// reports then say when the step's last broadcast reached its socket,
	// besides when the worker read it.
	Stamped bool `json:"stamped,omitempty"`
}

// workerCmd is a command line.
type workerCmd struct {
	Cmd      string        `json:"cmd"` // step, report, cut, drop, tally, quit
	Step     int64         `json:"step,omitempty"`
	Full     bool          `json:"full,omitempty"`     // report: with the histogram
	Deadline time.Duration `json:"deadline,omitempty"` // drop, tally: give up after
	// Want (drop after a cut) is how many broadcasts of the current step
	// each socket missed while away: a recovered socket is to be replayed
	// them, any other resyncs its board's tasks room (getChangesSince after
	// the last seq it saw), as the client library does.
	Want int `json:"want,omitempty"`
}

// workerEvent is an output line.
type workerEvent struct {
	Ev string `json:"ev"` // ready, step, report, storm, error

	// ready
	Connected int    `json:"connected,omitempty"`
	Failed    int    `json:"failed,omitempty"`
	Error     string `json:"error,omitempty"`

	// report
	Step        int64          `json:"step,omitempty"`
	Delivered   uint64         `json:"delivered,omitempty"`
	Stale       uint64         `json:"stale,omitempty"`
	Gaps        uint64         `json:"gaps,omitempty"`
	Disconnects uint64         `json:"disconnects,omitempty"`
	WireBytes   uint64         `json:"wireBytes,omitempty"` // read off the network since the step began
	Hist        *HistogramData `json:"hist,omitempty"`
	// Reached counts the sockets that received at least one message of the
	// step, LastNs is when the last of those receipts was (wall clock, Unix
	// ns: every process of the tool reads the same machine's clock).
	Reached int64 `json:"reached,omitempty"`
	LastNs  int64 `json:"lastNs,omitempty"`
	// LastArrivalNs is when the last of them reached its socket, by the
	// kernel's stamps (workerConfig.Stamped; 0 without): a time the
	// worker's own scheduling has no part in.
	LastArrivalNs int64 `json:"lastArrivalNs,omitempty"`

	// storm (and cut: Expected)
	Expected  int   `json:"expected,omitempty"`
	Rejoined  int   `json:"rejoined,omitempty"`
	Recovered int   `json:"recovered,omitempty"` // back with their session restored (same pid)
	Failures  int64 `json:"failures,omitempty"`
	DoneNs    int64 `json:"doneNs,omitempty"`

	// tally: of the sockets back, those that got every missed broadcast
	// (recovered: replayed; not recovered: returned by the resync), when
	// the last of them did, and broadcasts received twice
	CompleteRecovered int    `json:"completeRecovered,omitempty"`
	CompleteResync    int    `json:"completeResync,omitempty"`
	ResyncFailures    int    `json:"resyncFailures,omitempty"`
	ResyncRetries     uint64 `json:"resyncRetries,omitempty"` // resync calls refused rate_limited, asked again
	CaughtUpNs        int64  `json:"caughtUpNs,omitempty"`
	Duplicates        uint64 `json:"duplicates,omitempty"`
	GapsAfterReturn   uint64 `json:"gapsAfterReturn,omitempty"`
}

type worker struct {
	cfg     workerConfig
	sockets []*benchSocket

	step       atomic.Int64
	hist       atomic.Pointer[Histogram]
	delivered  atomic.Uint64
	stale      atomic.Uint64
	gaps       atomic.Uint64
	duplicates atomic.Uint64 // broadcasts with a seq at or below the socket's last one
	// resync calls refused rate_limited and asked again
	resyncRetries atomic.Uint64
	disconnects   atomic.Uint64
	wireBase      atomic.Uint64 // wsclient.BytesRead at the step's start
	reached       atomic.Int64  // sockets with a message of the step
	lastRecv      atomic.Int64  // Unix ns of the step's latest receipt
	lastArrival   atomic.Int64  // Unix ns of the step's latest arrival, by the kernel's stamps (Stamped)

	// gen counts drops: a socket that ends with the generation changed was
	// dropped on purpose and reconnects at once.
	gen      atomic.Int64
	failures atomic.Int64 // connect attempts that failed

	mu        sync.Mutex
	firstErr  error
	ready     int // sockets connected and joined at least once
	failed    int // sockets that never connected
	rejoined  int // sockets back after the last drop
	recovered int // of them, back with their session restored
	lastJoin  time.Time
	// After a cut: hold is closed by the drop that lets the sockets
	// reconnect, want is what each missed; completeRecovered,
	// completeResync, resyncFailures and caughtUp count how they caught up.
	hold              chan struct{}
	want              int
	completeRecovered int // recovered, and replayed every missed broadcast
	completeResync    int // not recovered, and got every missed one by resync
	resyncFailures    int
	caughtUp          time.Time     // when the last one completed
	changed           chan struct{} // closed and replaced when the counters above change
	dialSlots         chan struct{}
	stormSlots        chan struct{} // nil: reconnects after a drop are not bounded
}

// The Socket.IO sockets' transports (-transport).
const (
	transportWebSocket = "websocket"
	transportPolling   = "polling"
)

// The sockets' protocols.
const (
	protoSocketIO   = "socketio"
	protoCentrifugo = "centrifugo"
)

// benchConn is one connected socket, of either protocol.
type benchConn interface {
	Next() ([]byte, error)
	// Arrival is when the message Next returned reached the socket (Unix
	// ns, the kernel's stamp), 0 when the socket is not stamped.
	Arrival() int64
	Close() error
	SetDeadline(time.Time) error
}

// connBox holds a benchConn for an atomic.Pointer.
type connBox struct{ benchConn }

type benchSocket struct {
	i       int
	conn    atomic.Pointer[connBox]
	lastSeq int64
	// stepSeen is the last step the socket received a message of; its
	// reading goroutine alone touches it.
	stepSeen int64

	// The session to recover at the next connect, as socket.io-client
	// keeps it (its _pid and _lastOffset): empty while the server offers
	// no recovery.
	pid, offset string
	// After a cut: the broadcasts of the step it missed, how many of them
	// it has received since (replayed, or returned by its resync), and
	// whether its session was recovered.
	want, missedGot int
	recovered       bool

	// Kept across reconnects, as a browser keeps its token and its rooms:
	// a storm's reconnect signs nothing and builds no room names.
	token    string
	tokenExp time.Time
	joins    []sioclient.Call
	channels []string // Centrifugo: the channels standing for the rooms
}

// tokenTTL is how long the tool's tokens are valid; one is minted again
// when less than tokenRenew of it is left.
const (
	tokenTTL   = time.Hour
	tokenRenew = time.Minute
)

// runWorker serves one worker over in (commands) and out (events) until quit,
// EOF or ctx ends.
func runWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	enc := json.NewEncoder(out)
	if !sc.Scan() {
		return fmt.Errorf("worker: no config: %v", sc.Err())
	}
	var cfg workerConfig
	if err := json.Unmarshal(sc.Bytes(), &cfg); err != nil {
		return fmt.Errorf("worker: bad config: %w", err)
	}
	if cfg.DialConcurrency <= 0 {
		cfg.DialConcurrency = 64
	}
	// The worker's live heap is small and its thousands of goroutine
	// stacks are scanned at every collection: at the default pace, GC was
	// about a tenth of the tool's CPU in a reconnect storm.
	debug.SetGCPercent(400)
	w := &worker{cfg: cfg, changed: make(chan struct{}), dialSlots: make(chan struct{}, cfg.DialConcurrency)}
	if cfg.StormConcurrency > 0 {
		w.stormSlots = make(chan struct{}, cfg.StormConcurrency)
	}
	w.hist.Store(NewHistogram())

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for j := range cfg.Count {
		w.sockets = append(w.sockets, &benchSocket{i: cfg.First + j})
	}
	// reads do not watch ctx: closing the connections ends them
	context.AfterFunc(ctx, func() {
		for _, s := range w.sockets {
			if c := s.conn.Load(); c != nil {
				_ = c.Close()
			}
		}
	})
	for _, s := range w.sockets {
		wg.Add(1)
		go func() { defer wg.Done(); w.runSocket(ctx, s) }()
	}
	// ready once every socket joined or gave up
	w.waitFor(ctx, 0, func() bool { return w.ready+w.failed >= cfg.Count })
	w.mu.Lock()
	ev := workerEvent{Ev: "ready", Connected: w.ready, Failed: w.failed}
	if w.firstErr != nil {
		ev.Error = w.firstErr.Error()
	}
	w.mu.Unlock()
	if err := enc.Encode(ev); err != nil {
		return err
	}

	for sc.Scan() {
		var c workerCmd
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return fmt.Errorf("worker: bad command: %w", err)
		}
		var ev workerEvent
		switch c.Cmd {
		case "step":
			w.hist.Store(NewHistogram())
			w.delivered.Store(0)
			w.stale.Store(0)
			w.gaps.Store(0)
			w.wireBase.Store(wsclient.BytesRead())
			w.reached.Store(0)
			w.lastRecv.Store(0)
			w.lastArrival.Store(0)
			w.step.Store(c.Step)
			ev = workerEvent{Ev: "step", Step: c.Step}
		case "report":
			ev = workerEvent{Ev: "report", Step: w.step.Load(), Delivered: w.delivered.Load(),
				Stale: w.stale.Load(), Gaps: w.gaps.Load(), Disconnects: w.disconnects.Load(),
				WireBytes: wsclient.BytesRead() - w.wireBase.Load(), Reached: w.reached.Load(), LastNs: w.lastRecv.Load(),
				LastArrivalNs: w.lastArrival.Load()}
			if c.Full {
				d := w.hist.Load().Data()
				ev.Hist = &d
			}
		case "cut":
			ev = w.cut()
		case "drop":
			ev = w.drop(ctx, c.Deadline, c.Want)
		case "tally":
			ev = w.tally(ctx, c.Deadline)
		case "quit":
			return nil
		default:
			ev = workerEvent{Ev: "error", Error: fmt.Sprintf("unknown command %q", c.Cmd)}
		}
		if err := enc.Encode(ev); err != nil {
			return err
		}
	}
	return sc.Err()
}

// waitFor blocks until cond (read under w.mu) holds, ctx ends or timeout
// (0: none) passes.
func (w *worker) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		w.mu.Lock()
		ok, ch := cond(), w.changed
		w.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-deadline:
			return false
		}
	}
}

func (w *worker) update(f func()) {
	w.mu.Lock()
	f()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// The sockets are dropped by closing their TCP connections (Conn.Close):
// no WebSocket close frame, no Socket.IO DISCONNECT, so the server sees a
// transport close, as when a network fails — a cut it keeps the session of
// for recovery. A client's own disconnect() would send 41 and end it.

// cut closes every socket at once; they stay away until the next drop.
func (w *worker) cut() workerEvent {
	var expected int
	w.update(func() {
		w.hold = make(chan struct{})
		expected = w.ready
	})
	w.closeAll()
	return workerEvent{Ev: "cut", Expected: expected}
}

// closeAll starts a new generation and closes every socket: the sockets
// then reconnect (after the hold, if any).
func (w *worker) closeAll() {
	w.gen.Add(1)
	for _, s := range w.sockets {
		if c := s.conn.Load(); c != nil {
			_ = c.Close()
		}
	}
}

// drop closes every socket at once, or lets the sockets of a cut come
// back, and waits until all are back in their rooms (or the deadline
// passes). want is what each socket missed while cut (0: nothing counted).
func (w *worker) drop(ctx context.Context, deadline time.Duration, want int) workerEvent {
	if deadline <= 0 {
		deadline = time.Minute
	}
	var expected int
	var hold chan struct{}
	w.update(func() {
		w.rejoined, w.recovered = 0, 0
		w.completeRecovered, w.completeResync, w.resyncFailures = 0, 0, 0
		w.lastJoin, w.caughtUp = time.Time{}, time.Time{}
		w.want = want
		expected = w.ready
		hold, w.hold = w.hold, nil
		w.firstErr = nil // the storm's own first failure, for the report
	})
	f0 := w.failures.Load()
	w.duplicates.Store(0)
	w.gaps.Store(0)
	w.resyncRetries.Store(0)
	if hold != nil {
		close(hold)
	} else {
		w.closeAll()
	}
	w.waitFor(ctx, deadline, func() bool { return w.rejoined >= expected })
	w.mu.Lock()
	defer w.mu.Unlock()
	ev := workerEvent{Ev: "storm", Expected: expected, Rejoined: w.rejoined, Recovered: w.recovered, Failures: w.failures.Load() - f0}
	if ev.Failures > 0 && w.firstErr != nil {
		ev.Error = w.firstErr.Error()
	}
	if !w.lastJoin.IsZero() {
		ev.DoneNs = w.lastJoin.UnixNano()
	}
	return ev
}

// tally waits until every socket back after the last drop got what it
// missed (or the deadline passes), and says how they caught up.
func (w *worker) tally(ctx context.Context, deadline time.Duration) workerEvent {
	if deadline <= 0 {
		deadline = time.Minute
	}
	w.waitFor(ctx, deadline, func() bool { return w.completeRecovered+w.completeResync+w.resyncFailures >= w.rejoined })
	w.mu.Lock()
	defer w.mu.Unlock()
	ev := workerEvent{Ev: "tally", Rejoined: w.rejoined, Recovered: w.recovered, CompleteRecovered: w.completeRecovered,
		CompleteResync: w.completeResync, ResyncFailures: w.resyncFailures,
		Duplicates: w.duplicates.Load(), GapsAfterReturn: w.gaps.Load(), ResyncRetries: w.resyncRetries.Load()}
	if !w.caughtUp.IsZero() {
		ev.CaughtUpNs = w.caughtUp.UnixNano()
	}
	if w.resyncFailures > 0 && w.firstErr != nil {
		ev.Error = w.firstErr.Error()
	}
	return ev
}

// runSocket keeps socket s connected and in its rooms until ctx ends.
func (w *worker) runSocket(ctx context.Context, s *benchSocket) {
	everJoined := false
	attempts := 0
	slots := w.dialSlots // after a drop: w.stormSlots
	for ctx.Err() == nil {
		gen := w.gen.Load()
		c, err := w.connect(ctx, s, slots)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.failures.Add(1)
			attempts++
			w.update(func() {
				if w.firstErr == nil {
					w.firstErr = fmt.Errorf("socket %d: %w", s.i, err)
				}
				if !everJoined && attempts == 3 {
					w.failed++
				}
			})
			if !everJoined && attempts >= 3 {
				return
			}
			sleepCtx(ctx, time.Duration(min(attempts, 10))*100*time.Millisecond)
			continue
		}
		attempts = 0
		slots = w.dialSlots
		s.conn.Store(&connBox{c})
		if ctx.Err() != nil {
			_ = c.Close()
			return
		}
		if w.gen.Load() != gen { // dropped while connecting: this one counts as dropped too
			_ = c.Close()
			s.conn.Store(nil)
			continue
		}
		sc, _ := c.(*sioclient.Conn)
		recovered := sc != nil && sc.Recovered
		w.update(func() {
			if !everJoined {
				w.ready++
			} else if gen == w.gen.Load() {
				w.rejoined++
				w.lastJoin = time.Now()
				if recovered {
					w.recovered++
				}
				s.want, s.missedGot, s.recovered = w.want, 0, recovered
			}
		})
		everJoined = true
		if s.want > 0 && !recovered && sc != nil {
			w.resync(sc, s)
		}
		err = w.readLoop(c, s)
		if sc != nil {
			s.pid, s.offset = sc.PID, sc.Offset()
		}
		s.conn.Store(nil)
		_ = c.Close()
		if ctx.Err() != nil {
			return
		}
		if w.gen.Load() != gen {
			slots = w.stormSlots
			w.mu.Lock()
			hold := w.hold
			w.mu.Unlock()
			if hold != nil { // cut: away until the drop
				select {
				case <-hold:
				case <-ctx.Done():
					return
				}
			}
			if w.cfg.Jitter > 0 {
				sleepCtx(ctx, rand.N(w.cfg.Jitter))
			}
			continue
		}
		w.disconnects.Add(1)
		w.update(func() {
			if w.firstErr == nil {
				w.firstErr = fmt.Errorf("socket %d lost: %w", s.i, err)
			}
		})
		sleepCtx(ctx, time.Second) // like socket.io-client's first reconnect delay
	}
}

// connect dials, authenticates and joins s's rooms, holding one of slots
// meanwhile (nil: no bound).
func (w *worker) connect(ctx context.Context, s *benchSocket, slots chan struct{}) (benchConn, error) {
	if slots != nil {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		defer func() { <-slots }()
	}
	if s.token == "" || time.Until(s.tokenExp) < tokenRenew {
		tok, err := mintToken(w.cfg.Secret, userOf(s.i), tokenTTL)
		if err != nil {
			return nil, err
		}
		s.token, s.tokenExp = tok, time.Now().Add(tokenTTL)
	}
	if w.cfg.Protocol == protoCentrifugo {
		return w.connectCentrifugo(ctx, s)
	}
	if s.joins == nil {
		for _, room := range roomsOf(w.cfg.Mode, s.i, w.cfg.Rooms) {
			s.joins = append(s.joins, sioclient.Call{Name: string(proto.EndpointAddToRoom), Args: proto.RoomArgs{RoomName: room}})
		}
	}
	url := w.cfg.URL
	if n := len(w.cfg.URLs); n > 0 {
		url = w.cfg.URLs[s.i%n]
	}
	c, err := sioclient.Dial(ctx, sioclient.Options{URL: url, Token: s.token, ClientID: clientOf(s.i),
		Source: sourceIP(s.i, w.cfg.SourceIPs), Timeout: w.cfg.ConnectTimeout, Polling: w.cfg.Polling, Deflate: w.cfg.Deflate,
		Stamped: w.cfg.Stamped,
		PID:     s.pid, Offset: s.offset})
	if err != nil {
		return nil, err
	}
	if c.Recovered {
		// back in its rooms already, the missed broadcasts on their way:
		// a client joins nothing again (the client library neither)
		return c, nil
	}
	// The joins go out together, as a client's "connect" handler sends them.
	return w.joined(c, func() error {
		if err := c.CallAll(s.joins); err != nil {
			return fmt.Errorf("join rooms: %w", err)
		}
		return nil
	})
}

// joined runs join (a connected socket's joins or subscribes) within the
// connect timeout, 10 s at least, and returns c, or closes it when join
// fails.
func (w *worker) joined(c benchConn, join func() error) (benchConn, error) {
	_ = c.SetDeadline(time.Now().Add(max(w.cfg.ConnectTimeout, 10*time.Second)))
	if err := join(); err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// connectCentrifugo connects with the token and subscribes to the channels
// standing for s's rooms, the subscribes in one frame as the joins are.
func (w *worker) connectCentrifugo(ctx context.Context, s *benchSocket) (benchConn, error) {
	if s.channels == nil {
		for _, name := range roomsOf(w.cfg.Mode, s.i, w.cfg.Rooms) {
			room, err := proto.ParseRoom(name)
			if err != nil {
				return nil, err
			}
			s.channels = append(s.channels, centrifugoChannel(room))
		}
	}
	c, err := cfclient.Dial(ctx, cfclient.Options{URL: w.cfg.URL, Token: s.token,
		Source: sourceIP(s.i, w.cfg.SourceIPs), Timeout: w.cfg.ConnectTimeout})
	if err != nil {
		return nil, err
	}
	return w.joined(c, func() error { return c.SubscribeAll(s.channels) })
}

// resync is what the client library does for a room when its session was
// not recovered: getChangesSince after the last seq it saw, here for the
// board's tasks room, the one the missed broadcasts went to. What it
// returns counts as received.
func (w *worker) resync(c *sioclient.Conn, s *benchSocket) {
	room, err := proto.BoardTasksRoom(boardOf(s.i, w.cfg.Rooms))
	if err != nil {
		w.resyncFailed(s, err)
		return
	}
	after := uint64(s.lastSeq)
	var live []int64 // broadcasts that came during the call: counted as they came
	var ack sioclient.Ack
	for attempt := 1; ; attempt++ {
		_ = c.SetDeadline(time.Now().Add(max(w.cfg.ConnectTimeout, 10*time.Second)))
		ack, err = c.Call(string(proto.EndpointGetChangesSince), proto.ChangesArgs{RoomName: room.Name(), Cursor: proto.Cursor{AfterSeq: &after}},
			func(msg []byte) {
				if f, ok := parseBroadcast(msg); ok {
					live = append(live, f.seq)
					w.record(s, f)
				}
			})
		_ = c.SetDeadline(time.Time{})
		if err == nil || ack.Error == nil || ack.Error.Code != string(proto.CodeRateLimited) || attempt == resyncAttempts {
			break
		}
		// refused for now (sync's admission queue is full): asked again
		// after a backoff, as the client library does; broadcasts that
		// come meanwhile wait in the socket's buffers
		w.resyncRetries.Add(1)
		time.Sleep(resyncBackoff(attempt, time.Duration(ack.Error.RetryAfterMs)*time.Millisecond))
	}
	var res proto.ChangesResult
	if err == nil {
		err = json.Unmarshal(ack.Data, &res)
	}
	if err != nil {
		w.resyncFailed(s, err)
		return
	}
	for _, ch := range res.Changes {
		s.lastSeq = max(s.lastSeq, int64(ch.Seq))
		if !slices.Contains(live, int64(ch.Seq)) {
			w.gotMissed(s)
		}
	}
}

// The client library's retry of a history page refused as rate_limited
// (clients/js/src/room.ts, page and backoff): at most 8 attempts, waiting
// half to all of a step doubling from 500 ms to 5 s, and never less than
// the gateway's retryAfterMs.
const (
	resyncAttempts   = 8
	resyncRetryMin   = 500 * time.Millisecond
	resyncRetryLimit = 5 * time.Second
)

// resyncBackoff is the wait after the n-th refusal in a row.
func resyncBackoff(n int, retryAfter time.Duration) time.Duration {
	step := min(resyncRetryLimit, resyncRetryMin<<min(n-1, 16))
	return max(retryAfter, step/2+rand.N(step/2+1))
}

func (w *worker) resyncFailed(s *benchSocket, err error) {
	w.update(func() {
		w.resyncFailures++
		if w.firstErr == nil {
			w.firstErr = fmt.Errorf("socket %d: resync: %w", s.i, err)
		}
	})
}

// gotMissed counts one of the broadcasts s missed as received, and s as
// caught up with the last of them.
func (w *worker) gotMissed(s *benchSocket) {
	if s.missedGot >= s.want {
		return
	}
	s.missedGot++
	if s.missedGot < s.want {
		return
	}
	w.update(func() {
		if s.recovered {
			w.completeRecovered++
		} else {
			w.completeResync++
		}
		w.caughtUp = time.Now()
	})
}

// readLoop reads until the socket fails, timing every benchmark broadcast.
func (w *worker) readLoop(c benchConn, s *benchSocket) error {
	parse := parseBroadcast
	if w.cfg.Protocol == protoCentrifugo {
		parse = parsePublication
	}
	for {
		msg, err := c.Next()
		if err != nil {
			return err
		}
		f, ok := parse(msg)
		if !ok {
			continue
		}
		f.arrival = c.Arrival()
		w.record(s, f)
	}
}

// record times a benchmark broadcast, checks its seqs against the last
// one's and counts what a socket back from a cut missed.
func (w *worker) record(s *benchSocket, f broadcastFields) {
	now := time.Now().UnixNano()
	current := f.hasTS && f.step == w.step.Load()
	if current {
		at := now
		if f.arrival > 0 {
			at = f.arrival // the socket's, not the worker's, moment
		}
		w.hist.Load().Record(at - f.ts)
		w.delivered.Add(1)
		if s.stepSeen != f.step {
			s.stepSeen = f.step
			w.reached.Add(1)
		}
		storeMax(&w.lastRecv, now)
		storeMax(&w.lastArrival, f.arrival)
	} else {
		w.stale.Add(1)
	}
	if f.hasSeqs {
		if s.lastSeq != 0 && f.prevSeq != s.lastSeq && f.seq > s.lastSeq {
			w.gaps.Add(1)
		}
		if f.seq <= s.lastSeq && f.seq > 0 {
			w.duplicates.Add(1)
			return
		}
		s.lastSeq = max(s.lastSeq, f.seq)
	}
	if current {
		w.gotMissed(s)
	}
}

// storeMax raises v to x unless it is already at least x.
func storeMax(v *atomic.Int64, x int64) {
	for last := v.Load(); x > last; last = v.Load() {
		if v.CompareAndSwap(last, x) {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// workerMain is `roomcast bench worker`: a worker on stdin and stdout.
func workerMain(ctx context.Context) error {
	return runWorker(ctx, os.Stdin, os.Stdout)
}
