package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/roomcast/roomcast/cmd/roomcast/internal/cfclient"
	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// A fleet is the coordinator's side of the workers that hold the sockets:
// one in-process worker, or several worker processes (this binary,
// re-executed as `roomcast bench worker`) when the sockets do not fit under
// one process's file descriptor limit.

// maxSocketsPerProc keeps a worker well under `ulimit -n` (20000 here).
const maxSocketsPerProc = 8000

type workerHandle struct {
	in   io.WriteCloser
	out  *bufio.Scanner
	proc *proc         // nil for the in-process worker
	done chan struct{} // in-process worker ended
}

type fleet struct {
	workers []*workerHandle
	pids    []int // worker processes, for their CPU and RSS
}

// readyStats is what the workers said once every socket connected or gave up.
type readyStats struct {
	Connected, Failed int
	Took              time.Duration
	FirstError        string
}

// startFleet starts procs workers (0: as many as the socket count needs)
// holding sockets [0, n) of mode, and waits until every socket has joined
// its rooms or given up.
func startFleet(ctx context.Context, o options, srv *server, mode string, n int) (*fleet, readyStats, error) {
	procs := o.Procs
	if procs <= 0 {
		procs = (n + maxSocketsPerProc - 1) / maxSocketsPerProc
	}
	procs = max(1, min(procs, n))
	f := &fleet{}
	start := time.Now()
	first := 0
	for p := range procs {
		count := n / procs
		if p < n%procs {
			count++
		}
		cfg := workerConfig{
			URL: sioclient.URL(srv.url), Protocol: protoSocketIO, Secret: srv.secret, Mode: mode, First: first, Count: count,
			Rooms: o.Rooms, SourceIPs: o.SourceIPs, DialConcurrency: o.DialConcurrency,
			ConnectTimeout: 10 * time.Second, Jitter: o.Jitter, StormConcurrency: o.StormConcurrency,
		}
		cfg.Deflate = o.Deflate
		cfg.Stamped = mode == modeFleet
		if o.Transport == transportPolling {
			cfg.URL, cfg.Polling = sioclient.PollingURL(srv.url), true
		}
		for _, u := range srv.gateways {
			cfg.URLs = append(cfg.URLs, sioclient.URL(u))
		}
		if srv.name == targetCentrifugo {
			cfg.URL, cfg.Protocol = cfclient.URL(srv.url), protoCentrifugo
		}
		first += count
		// bench fleet's sockets are always in worker processes: the
		// coordinator's descriptors are not counted against them
		h, err := f.spawn(ctx, cfg, procs == 1 && mode != modeFleet)
		if err != nil {
			f.close()
			return nil, readyStats{}, err
		}
		f.workers = append(f.workers, h)
	}
	evs, err := f.collect(ctx)
	if err != nil {
		f.close()
		return nil, readyStats{}, err
	}
	st := readyStats{Took: time.Since(start)}
	for _, ev := range evs {
		if ev.Ev != "ready" {
			f.close()
			return nil, st, fmt.Errorf("worker: want ready, got %q %s", ev.Ev, ev.Error)
		}
		st.Connected += ev.Connected
		st.Failed += ev.Failed
		if st.FirstError == "" {
			st.FirstError = ev.Error
		}
	}
	return f, st, nil
}

func (f *fleet) spawn(ctx context.Context, cfg workerConfig, inProcess bool) (*workerHandle, error) {
	line, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	line = append(line, '\n')
	h := &workerHandle{}
	if inProcess {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		h.in, h.done = inW, make(chan struct{})
		h.out = bufio.NewScanner(outR)
		go func() {
			defer close(h.done)
			err := runWorker(ctx, inR, outW)
			if err == nil {
				err = io.EOF
			}
			_ = inR.CloseWithError(err)
			_ = outW.CloseWithError(err)
		}()
	} else {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("re-execute the load tool: %w", err)
		}
		cmd := exec.Command(exe, "bench", "worker")
		cmd.Env = append(os.Environ(), workerEnv+"=1")
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		p, err := startProc(cmd)
		if err != nil {
			return nil, fmt.Errorf("start a worker process: %w", err)
		}
		h.in, h.out, h.proc = in, bufio.NewScanner(out), p
		f.pids = append(f.pids, cmd.Process.Pid)
	}
	h.out.Buffer(make([]byte, 64<<10), 16<<20)
	if _, err := h.in.Write(line); err != nil {
		return nil, fmt.Errorf("configure a worker: %w", err)
	}
	return h, nil
}

// collect reads one event from every worker.
func (f *fleet) collect(ctx context.Context) ([]workerEvent, error) {
	evs := make([]workerEvent, len(f.workers))
	errs := make([]error, len(f.workers))
	var wg sync.WaitGroup
	for i, h := range f.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !h.out.Scan() {
				errs[i] = fmt.Errorf("worker %d ended: %v", i, h.out.Err())
				return
			}
			errs[i] = json.Unmarshal(h.out.Bytes(), &evs[i])
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		f.close() // unblocks the readers
		<-done
		return nil, ctx.Err()
	}
	return evs, errors.Join(errs...)
}

// command sends c to every worker and reads each one's answer.
func (f *fleet) command(ctx context.Context, c workerCmd) ([]workerEvent, error) {
	line, _ := json.Marshal(c)
	line = append(line, '\n')
	for i, h := range f.workers {
		if _, err := h.in.Write(line); err != nil {
			return nil, fmt.Errorf("worker %d: %w", i, err)
		}
	}
	return f.collect(ctx)
}

// close tells every worker to quit and waits for them (killing stragglers).
func (f *fleet) close() {
	line := []byte(`{"cmd":"quit"}` + "\n")
	for _, h := range f.workers {
		_, _ = h.in.Write(line)
		_ = h.in.Close()
	}
	for _, h := range f.workers {
		if h.proc != nil {
			select {
			case <-h.proc.exited:
			case <-time.After(10 * time.Second):
				h.proc.stop(time.Second)
			}
		} else if h.done != nil {
			select {
			case <-h.done:
			case <-time.After(10 * time.Second):
			}
		}
	}
	f.workers = nil
}

// toolPIDs are the load tool's processes: this one (0) and the workers.
func (f *fleet) toolPIDs() []int { return append([]int{0}, f.pids...) }
