package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux this runs on (sysconf(_SC_CLK_TCK) needs cgo to ask).
const clockTicks = 100

// procSample is what /proc says about one process at one moment.
type procSample struct {
	CPU time.Duration // user + system
	RSS int64         // bytes, VmRSS
	HWM int64         // bytes, VmHWM: peak RSS over the process's life
}

// readProc samples pid (0: this process).
func readProc(pid int) (procSample, error) {
	dir := "/proc/self"
	if pid > 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	var s procSample
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return s, fmt.Errorf("read cpu time of pid %d: %w", pid, err)
	}
	cpu, err := parseStatCPU(stat)
	if err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	s.CPU = cpu
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	s.RSS = statusKB(status, "VmRSS:") << 10
	s.HWM = statusKB(status, "VmHWM:") << 10
	return s, nil
}

// parseStatCPU reads utime+stime from /proc/<pid>/stat. The command name
// (field 2) may hold spaces and parentheses, so fields are counted from the
// last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name in %.60q", stat)
	}
	f := bytes.Fields(stat[i+1:])
	// after ")": state is field 3, utime 14, stime 15 → indexes 11 and 12
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	u, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q are not numbers", f[11], f[12])
	}
	return time.Duration(u+s) * time.Second / clockTicks, nil
}

// statusKB reads a "Key:   123 kB" line of /proc/<pid>/status; 0 if absent.
func statusKB(status []byte, key string) int64 {
	i := bytes.Index(status, []byte(key))
	if i < 0 {
		return 0
	}
	line := status[i+len(key):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := bytes.Fields(line)
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseInt(string(f[0]), 10, 64)
	return v
}

// procWatch samples a set of processes every interval and keeps the sum of
// their RSS at its highest, and their CPU at the start.
type procWatch struct {
	pids  []int
	start procSample
	mu    sync.Mutex
	peak  int64
	stop  context.CancelFunc
	done  chan struct{}
}

// sumProcs samples every pid and adds them up; processes that are gone are
// skipped (a worker may have exited).
func sumProcs(pids []int) (procSample, error) {
	var sum procSample
	var firstErr error
	for _, p := range pids {
		s, err := readProc(p)
		if err != nil {
			firstErr = err
			continue
		}
		sum.CPU += s.CPU
		sum.RSS += s.RSS
		sum.HWM += s.HWM
	}
	return sum, firstErr
}

func watchProcs(ctx context.Context, pids []int, every time.Duration) *procWatch {
	w := &procWatch{pids: pids, done: make(chan struct{})}
	w.start, _ = sumProcs(pids)
	w.peak = w.start.RSS
	ctx, w.stop = context.WithCancel(ctx)
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if s, err := sumProcs(pids); err == nil {
					w.mu.Lock()
					w.peak = max(w.peak, s.RSS)
					w.mu.Unlock()
				}
			}
		}
	}()
	return w
}

// Stop ends the sampling and returns the CPU spent since the start and the
// peak RSS seen.
func (w *procWatch) Stop() (cpu time.Duration, peakRSS int64) {
	w.stop()
	<-w.done
	end, _ := sumProcs(w.pids)
	w.mu.Lock()
	defer w.mu.Unlock()
	return end.CPU - w.start.CPU, max(w.peak, end.RSS)
}
