//go:build linux

package bench

import (
	"errors"
	"os"
	"strconv"
	"syscall"
)

// lowestPriority gives every thread of each process nice 19 (on Linux a
// nice value is a thread's: setpriority on a pid changes its first thread
// only; threads started later take their creator's). A thread started by
// one not yet lowered could escape a single pass over /proc/PID/task, so
// the passes go on until one finds no thread it had not lowered.
func lowestPriority(pids []int) error {
	var errs []error
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid) + "/task"
		lowered := map[int]bool{}
		for pass := 0; pass < 10; pass++ {
			tasks, err := os.ReadDir(dir)
			if err != nil {
				errs = append(errs, err)
				break
			}
			fresh := false
			for _, t := range tasks {
				tid, err := strconv.Atoi(t.Name())
				if err != nil || lowered[tid] {
					continue
				}
				fresh, lowered[tid] = true, true
				if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, 19); err != nil && !errors.Is(err, syscall.ESRCH) {
					errs = append(errs, err)
				}
			}
			if !fresh {
				break
			}
		}
	}
	return errors.Join(errs...)
}
