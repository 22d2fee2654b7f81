package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/roomcast/proto"
)

// Fan-out: N sockets over R boards, one message after another to the boards'
// tasks rooms at a fixed rate, every socket timing every message from the
// publish time the message carries.

// stepResult is one fan-out run at one rate.
type stepResult struct {
	Rate        float64       `json:"rate"` // messages per second
	Duration    time.Duration `json:"duration"`
	Published   uint64        `json:"published"`
	PubFailed   int64         `json:"pubFailed"`
	Expected    uint64        `json:"expected"`
	Delivered   uint64        `json:"delivered"`
	Stale       uint64        `json:"stale"`
	Gaps        uint64        `json:"gaps"`
	Disconnects uint64        `json:"disconnects"`
	// WireBytes is what the sockets read off the network over the step
	// (frames or HTTP responses with their headers, pings included).
	WireBytes uint64        `json:"wireBytes"`
	Latency   Summary       `json:"latency"`
	ServerCPU time.Duration `json:"serverCPU"`
	ServerRSS int64         `json:"serverPeakRSS"`
	ToolCPU   time.Duration `json:"toolCPU"`
	Held      bool          `json:"held"`
	// NATSLeg is roomcast's latency from the publish to the stored message's
	// re-publication on its live subject, as a NATS client in the tool sees
	// it: the part of the end-to-end latency that is not the gateway's.
	NATSLeg *Summary `json:"natsLeg,omitempty"`
	// PublishLag is how far behind its schedule the publisher fell at worst:
	// a large one means the tool, not the server, set the pace.
	PublishLag time.Duration `json:"publishLag"`
	// CPUSplit is where the server's CPU went (-perf), nil without.
	CPUSplit *cpuSplit `json:"cpuSplit,omitempty"`
}

// DeliveryRatio is delivered / expected.
func (r stepResult) DeliveryRatio() float64 {
	if r.Expected == 0 {
		return 0
	}
	return float64(r.Delivered) / float64(r.Expected)
}

// DeliveriesPerSec is the delivered messages over the publishing window.
func (r stepResult) DeliveriesPerSec() float64 {
	return float64(r.Delivered) / r.Duration.Seconds()
}

// PerServerCPUSec is deliveries per second of server CPU: the headline.
func (r stepResult) PerServerCPUSec() float64 {
	if r.ServerCPU <= 0 {
		return 0
	}
	return float64(r.Delivered) / r.ServerCPU.Seconds()
}

// padText is n bytes of task-description-like words: a run of one letter
// would compress to nothing and flatter -deflate; words drawn from a small
// vocabulary compress about as much as a real description (~3×).
func padText(n int) string {
	words := strings.Fields(`the task needs review before release and the board owner asks for a
		second pass on layout colors copy tests docs api migration ticket sprint estimate done blocked
		customer report login page mobile search filter export invoice email notification settings`)
	r := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.String()[:n]
}

// BytesPerDelivery is what the sockets read off the network per delivery.
func (r stepResult) BytesPerDelivery() float64 {
	if r.Delivered == 0 {
		return 0
	}
	return float64(r.WireBytes) / float64(r.Delivered)
}

func runFanout(ctx context.Context, o options, srv *server, log io.Writer) (result, error) {
	res := result{Target: srv.name, Mode: modeFanout}
	f, ready, err := startFleet(ctx, o, srv, modeFanout, o.Sockets)
	if err != nil {
		return res, err
	}
	defer f.close()
	fmt.Fprintf(log, "%s: %d sockets connected and joined in %s (%d failed)\n", srv.name, ready.Connected, ready.Took.Round(time.Millisecond), ready.Failed)
	if ready.Failed > 0 {
		fmt.Fprintf(log, "%s: first error: %s\n", srv.name, ready.FirstError)
	}
	if ready.Connected == 0 {
		return res, fmt.Errorf("%s: no socket connected: %s", srv.name, ready.FirstError)
	}
	rate := o.Rate
	var last *stepResult
	for step := int64(1); ; step++ {
		r, err := runStep(ctx, o, srv, f, step, rate)
		if err != nil {
			return res, err
		}
		r.Held = r.DeliveryRatio() >= o.MinDelivery && r.Latency.P99 <= o.MaxP99
		fmt.Fprintf(log, "%s: step %d: %s\n", srv.name, step, r.line())
		res.Steps = append(res.Steps, r)
		if !o.Ramp {
			last = &res.Steps[len(res.Steps)-1]
			break
		}
		if !r.Held {
			break
		}
		last = &res.Steps[len(res.Steps)-1]
		if int(step) >= o.MaxSteps {
			break
		}
		rate *= o.RampFactor
	}
	res.Connected, res.ConnectFailed = ready.Connected, ready.Failed
	if last == nil {
		res.Notes = append(res.Notes, fmt.Sprintf("no step held (p99 ≤ %s, delivery ≥ %.2f%%)", o.MaxP99, 100*o.MinDelivery))
		last = &res.Steps[0]
	} else if o.Ramp {
		res.Notes = append(res.Notes, fmt.Sprintf("last step that held (p99 ≤ %s, delivery ≥ %.2f%%): %.0f msg/s", o.MaxP99, 100*o.MinDelivery, last.Rate))
	}
	res.Metrics = fanoutMetrics(*last)
	return res, nil
}

func (r stepResult) line() string {
	held := ""
	if !r.Held {
		held = "  (did not hold)"
	}
	return fmt.Sprintf("%.0f msg/s: delivered %d/%d (%.3f%%), %.0f deliveries/s, p50 %s p99 %s max %s, server %.2f CPU-s (%.0f deliveries/CPU-s), tool %.2f CPU-s%s%s",
		r.Rate, r.Delivered, r.Expected, 100*r.DeliveryRatio(), r.DeliveriesPerSec(),
		fmtDur(r.Latency.P50), fmtDur(r.Latency.P99), fmtDur(r.Latency.Max),
		r.ServerCPU.Seconds(), r.PerServerCPUSec(), r.ToolCPU.Seconds(), r.splitLine(), held)
}

func fanoutMetrics(r stepResult) []metric {
	m := []metric{
		{Name: "publish rate", Value: r.Rate, Unit: "msg/s", Higher: true},
		{Name: "deliveries/s", Value: r.DeliveriesPerSec(), Unit: "/s", Higher: true},
		{Name: "deliveries per server CPU-s", Value: r.PerServerCPUSec(), Unit: "/CPU-s", Higher: true},
		{Name: "delivered", Value: 100 * r.DeliveryRatio(), Unit: "%", Higher: true},
		{Name: "bytes per delivery", Value: r.BytesPerDelivery(), Unit: "B"},
		{Name: "latency p50", Value: ms(r.Latency.P50), Unit: "ms"},
		{Name: "latency p90", Value: ms(r.Latency.P90), Unit: "ms"},
		{Name: "latency p99", Value: ms(r.Latency.P99), Unit: "ms"},
		{Name: "latency max", Value: ms(r.Latency.Max), Unit: "ms"},
		{Name: "server CPU", Value: r.ServerCPU.Seconds(), Unit: "s"},
		{Name: "server peak RSS", Value: float64(r.ServerRSS) / (1 << 20), Unit: "MiB"},
		{Name: "tool CPU", Value: r.ToolCPU.Seconds(), Unit: "s"},
		{Name: "publisher lag max", Value: ms(r.PublishLag), Unit: "ms"},
		{Name: "seq gaps seen", Value: float64(r.Gaps), Unit: ""},
	}
	m = append(m, cpuSplitMetrics(r)...)
	if r.NATSLeg != nil {
		// last, so that the peer's column (which has none) stays aligned
		m = append(m,
			metric{Name: "NATS leg p50 (publish → live subject)", Value: ms(r.NATSLeg.P50), Unit: "ms"},
			metric{Name: "NATS leg p99", Value: ms(r.NATSLeg.P99), Unit: "ms"})
	}
	return m
}

// watchNATSLeg times every message of step on the live subjects, where
// JetStream re-publishes what it stored, until the returned func is called.
func watchNATSLeg(nc *nats.Conn, step int64) (func() Summary, error) {
	h := NewHistogram()
	ch := make(chan *nats.Msg, 1<<16)
	sub, err := nc.ChanSubscribe(proto.Subjects{}.LiveAll(), ch)
	if err != nil {
		return nil, err
	}
	_ = sub.SetPendingLimits(1<<16, 64<<20)
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	record := func(m *nats.Msg) {
		now := time.Now().UnixNano()
		ts, ok := intAfter(m.Data, keyTS)
		if st, _ := intAfter(m.Data, keyStep); ok && st == step {
			h.Record(now - ts)
		}
	}
	// ch is never closed: nats.go owns the sending side
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case m := <-ch:
				record(m)
			case <-stop:
				return
			}
		}
	}()
	return func() Summary {
		_ = sub.Unsubscribe()
		close(stop)
		<-done
		return h.Summary()
	}, nil
}

// runStep publishes at rate for o.Duration and waits for the deliveries.
func runStep(ctx context.Context, o options, srv *server, f *fleet, step int64, rate float64) (stepResult, error) {
	r := stepResult{Rate: rate, Duration: o.Duration}
	if _, err := f.command(ctx, workerCmd{Cmd: "step", Step: step}); err != nil {
		return r, err
	}
	var serverW *procWatch
	if srv.pid > 0 {
		serverW = watchProcs(ctx, []int{srv.pid}, 100*time.Millisecond)
	}
	toolW := watchProcs(ctx, f.toolPIDs(), time.Second)
	var perf *perfRecord
	if o.PerfDir != "" && srv.pid > 0 {
		var err error
		if perf, err = startPerf(ctx, srv.pid, filepath.Join(o.PerfDir, fmt.Sprintf("%s-step%d.perf", srv.name, step))); err != nil {
			return r, err
		}
		defer func() { _ = perf.end() }()
	}

	var stopLeg func() Summary
	if srv.nc != nil {
		var err error
		if stopLeg, err = watchNATSLeg(srv.nc, step); err != nil {
			return r, err
		}
	}
	pub := srv.newPublisher()
	boards := min(o.Rooms, o.Sockets)
	pad := padText(o.Pad)
	total := uint64(rate * o.Duration.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	var k uint64
	for k < total {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		now := time.Now()
		due := min(total, uint64(now.Sub(start)/interval)+1)
		if k < due {
			r.PublishLag = max(r.PublishLag, now.Sub(start.Add(time.Duration(k)*interval)))
		}
		for ; k < due; k++ {
			board := int(k % uint64(boards))
			room, env, err := benchEnvelope(board, k, step, start.Add(time.Duration(k)*interval), pad)
			if err != nil {
				return r, err
			}
			if err := pub.add(ctx, room, env); err != nil {
				return r, err
			}
			r.Expected += uint64(membersOf(board, o.Sockets, o.Rooms))
		}
		if err := pub.flush(ctx); err != nil {
			return r, err
		}
		next := start.Add(time.Duration(k) * interval)
		sleepCtx(ctx, max(time.Until(next), 200*time.Microsecond))
	}
	r.Published = k
	failed, err := pub.wait(ctx)
	if err != nil {
		return r, err
	}
	r.PubFailed = failed

	// drain: wait until everything expected arrived, or nothing more comes
	var delivered uint64
	lastProgress := time.Now()
	for time.Since(lastProgress) < o.Drain {
		evs, err := f.command(ctx, workerCmd{Cmd: "report"})
		if err != nil {
			return r, err
		}
		var d uint64
		for _, ev := range evs {
			d += ev.Delivered
		}
		if d != delivered {
			delivered, lastProgress = d, time.Now()
		}
		if d >= r.Expected {
			break
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	evs, err := f.command(ctx, workerCmd{Cmd: "report", Full: true})
	if err != nil {
		return r, err
	}
	h := NewHistogram()
	for _, ev := range evs {
		r.Delivered += ev.Delivered
		r.Stale += ev.Stale
		r.Gaps += ev.Gaps
		r.Disconnects += ev.Disconnects
		r.WireBytes += ev.WireBytes
		if ev.Hist != nil {
			wh, err := HistogramFromData(*ev.Hist)
			if err != nil {
				return r, err
			}
			h.Merge(wh)
		}
	}
	r.Latency = h.Summary()
	if stopLeg != nil {
		leg := stopLeg()
		r.NATSLeg = &leg
	}
	if serverW != nil {
		r.ServerCPU, r.ServerRSS = serverW.Stop()
	}
	r.ToolCPU, _ = toolW.Stop()
	if perf != nil {
		split, err := perf.stop(ctx)
		if err != nil {
			return r, err
		}
		r.CPUSplit = &split
	}
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", ms(d))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}
