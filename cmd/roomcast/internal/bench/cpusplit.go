package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Where a server's CPU goes during a fan-out step, from perf's call
// stacks (-perf DIR): the bench's one figure, deliveries per server
// CPU-second, mixes the server's own work with work that on a real
// network is not the server's. On loopback, the kernel delivers a segment
// to the reading socket in the sender's context: the client's TCP receive
// and its wake-up are charged to the server (docs/performance.md, "Where a
// delivery's CPU goes").

// The parts of a server's CPU, in the order they are printed.
const (
	partUser    = "user space"         // the server's code, its runtime, its GC
	partSend    = "kernel send"        // the socket writes: TCP, IP, netfilter, loopback transmit
	partReceive = "receive in context" // softirq receive run in the server's context: on loopback, its clients'
	partOther   = "other kernel"       // scheduling, polling, timers, reads, storage
)

var cpuParts = []string{partUser, partSend, partReceive, partOther}

// cpuSplit is a step's server CPU by part: each part's share of perf's
// samples of the server.
type cpuSplit struct {
	Samples int                `json:"samples"`
	Share   map[string]float64 `json:"share"`
	// KernelSamples: samples with a kernel frame. None means perf could not
	// see the kernel (perf_event_paranoid), and the split says nothing.
	KernelSamples int `json:"kernelSamples"`
}

// Kernel functions that mark a part when a stack holds them.
var (
	receiveMarks = []string{"net_rx_action", "process_backlog", "__napi_poll"}
	sendMarks    = []string{"tcp_sendmsg", "sock_sendmsg", "sock_write_iter", "__sys_sendmsg", "io_uring_enter", "__do_sys_io_uring_enter"}
)

// splitSamples reads `perf script -F ip,sym,dso` (samples as blocks of
// frames, the leaf first, blank lines between) and sorts each sample into
// a part: receive when its stack runs the softirq receive, else user space
// when its leaf is not in the kernel, else kernel send when a socket write
// is on the stack, else other kernel.
func splitSamples(r io.Reader) (cpuSplit, error) {
	s := cpuSplit{Share: make(map[string]float64, len(cpuParts))}
	counts := make(map[string]int, len(cpuParts))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var frames []perfFrame
	end := func() {
		if len(frames) == 0 {
			return
		}
		part, kernel := classifyStack(frames)
		counts[part]++
		s.Samples++
		if kernel {
			s.KernelSamples++
		}
		frames = frames[:0]
	}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			end()
			continue
		}
		f, err := parsePerfFrame(line)
		if err != nil {
			return cpuSplit{}, err
		}
		frames = append(frames, f)
	}
	if err := sc.Err(); err != nil {
		return cpuSplit{}, err
	}
	end()
	for _, p := range cpuParts {
		if s.Samples > 0 {
			s.Share[p] = float64(counts[p]) / float64(s.Samples)
		}
	}
	return s, nil
}

// perfFrame is one line of a sample's stack.
type perfFrame struct {
	sym    string
	kernel bool
}

// parsePerfFrame reads "ADDR SYMBOL (DSO)": the address in hex, the
// symbol (which may hold spaces and parentheses), the object last.
func parsePerfFrame(line string) (perfFrame, error) {
	addr, rest, _ := strings.Cut(line, " ")
	ip, err := strconv.ParseUint(addr, 16, 64)
	if err != nil {
		return perfFrame{}, fmt.Errorf("perf script: %q is not a frame (want ADDR SYMBOL (DSO))", line)
	}
	sym, dso := rest, ""
	if i := strings.LastIndex(rest, " ("); i >= 0 && strings.HasSuffix(rest, ")") {
		sym, dso = rest[:i], rest[i+2:len(rest)-1]
	} else if strings.HasPrefix(rest, "(") && strings.HasSuffix(rest, ")") {
		sym, dso = "", rest[1:len(rest)-1]
	}
	// x86-64 and arm64 put the kernel in the top half of the address space
	kernel := ip >= 1<<63 || strings.HasPrefix(dso, "[kernel")
	return perfFrame{sym: sym, kernel: kernel}, nil
}

// classifyStack returns a sample's part, and whether any frame is the
// kernel's.
func classifyStack(frames []perfFrame) (part string, kernel bool) {
	send := false
	for _, f := range frames {
		if !f.kernel {
			continue
		}
		kernel = true
		if hasMark(f.sym, receiveMarks) {
			return partReceive, true
		}
		if hasMark(f.sym, sendMarks) {
			send = true
		}
	}
	switch {
	case !frames[0].kernel:
		return partUser, kernel
	case send:
		return partSend, true
	default:
		return partOther, true
	}
}

func hasMark(sym string, marks []string) bool {
	for _, m := range marks {
		if sym == m || strings.HasPrefix(sym, m+"+") || strings.HasPrefix(sym, m+".") {
			return true
		}
	}
	return false
}

// perfRecord is perf recording one process with call stacks.
type perfRecord struct {
	cmd     *exec.Cmd
	path    string
	out     bytes.Buffer
	stopped bool
}

// startPerf records pid into path at 999 Hz with call stacks, until stop.
func startPerf(ctx context.Context, pid int, path string) (*perfRecord, error) {
	if _, err := exec.LookPath("perf"); err != nil {
		return nil, fmt.Errorf("-perf: %w (install linux-perf)", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	p := &perfRecord{path: path}
	p.cmd = exec.CommandContext(ctx, "perf", "record", "-q", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", path)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("-perf: %w", err)
	}
	return p, nil
}

// stop ends the recording (perf writes its file on SIGINT) and splits it.
func (p *perfRecord) stop(ctx context.Context) (cpuSplit, error) {
	if err := p.end(); err != nil {
		return cpuSplit{}, fmt.Errorf("perf record: %w: %s", err, strings.TrimSpace(p.out.String()))
	}
	script := exec.CommandContext(ctx, "perf", "script", "-i", p.path, "-F", "ip,sym,dso")
	var stderr bytes.Buffer
	script.Stderr = &stderr
	out, err := script.StdoutPipe()
	if err != nil {
		return cpuSplit{}, err
	}
	if err := script.Start(); err != nil {
		return cpuSplit{}, fmt.Errorf("perf script: %w", err)
	}
	s, splitErr := splitSamples(out)
	_, _ = io.Copy(io.Discard, out)
	if err := script.Wait(); err != nil {
		return cpuSplit{}, fmt.Errorf("perf script: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if splitErr != nil {
		return cpuSplit{}, splitErr
	}
	if s.Samples == 0 {
		return s, fmt.Errorf("perf recorded no sample of the server: %s", strings.TrimSpace(p.out.String()))
	}
	if s.KernelSamples == 0 {
		return s, errors.New("perf saw no kernel frame (kernel.perf_event_paranoid above 1 hides them from a user other than root): the split would say nothing")
	}
	return s, nil
}

// end stops perf record, once (a step that fails defers it).
func (p *perfRecord) end() error {
	if p.stopped {
		return nil
	}
	p.stopped = true
	_ = p.cmd.Process.Signal(os.Interrupt)
	if err := p.cmd.Wait(); err != nil && !isInterrupted(err) {
		return err
	}
	return nil
}

// isInterrupted: perf record ended by the SIGINT end sent (it usually
// exits 0 after writing its file; 130, or killed by the signal, is the
// same end: a file it did not write fails in perf script).
func isInterrupted(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && (ee.ExitCode() == 130 || ee.ExitCode() == -1)
}

// perPart is µs of server CPU per delivery in part p.
func (r stepResult) perPart(p string) float64 {
	if r.CPUSplit == nil || r.Delivered == 0 {
		return 0
	}
	return r.CPUSplit.Share[p] * r.ServerCPU.Seconds() * 1e6 / float64(r.Delivered)
}

// PerServerCPUSecOwn is deliveries per server CPU-second with the receive
// run in its context taken out: on loopback, what the server would spend if
// its clients read on other machines (less what a NIC's driver costs).
func (r stepResult) PerServerCPUSecOwn() float64 {
	if r.CPUSplit == nil || r.ServerCPU <= 0 {
		return 0
	}
	own := r.ServerCPU.Seconds() * (1 - r.CPUSplit.Share[partReceive])
	if own <= 0 {
		return 0
	}
	return float64(r.Delivered) / own
}

// splitLine is the split for a step's line ("" without one).
func (r stepResult) splitLine() string {
	if r.CPUSplit == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("; CPU per delivery:")
	for i, p := range cpuParts {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s %.2f µs", p, r.perPart(p))
	}
	fmt.Fprintf(&b, " (%d samples); receive taken out: %.0f deliveries/CPU-s", r.CPUSplit.Samples, r.PerServerCPUSecOwn())
	return b.String()
}

// cpuSplitMetrics are a step's rows for its CPU split (none without one).
func cpuSplitMetrics(r stepResult) []metric {
	if r.CPUSplit == nil {
		return nil
	}
	m := make([]metric, 0, len(cpuParts)+1)
	for _, p := range cpuParts {
		m = append(m, metric{Name: "CPU per delivery: " + p, Value: r.perPart(p), Unit: "µs"})
	}
	return append(m, metric{Name: "deliveries per server CPU-s, receive taken out", Value: r.PerServerCPUSecOwn(), Unit: "/CPU-s", Higher: true})
}
