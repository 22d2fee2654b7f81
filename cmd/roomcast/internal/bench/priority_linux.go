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
// only; threads started later take their creator's).
func lowestPriority(pids []int) error {
	var errs []error
	for _, pid := range pids {
		tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, 19); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
