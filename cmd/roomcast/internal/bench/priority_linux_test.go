package bench

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLowestPriority: every thread of a worker process (a Go process has
// several) ends at nice 19, not only its first; a process that is gone is
// an error.
func TestLowestPriority(t *testing.T) {
	cmd := exec.Command(roomcastBinary(t), "bench", "worker") // waits for its shard on stdin
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	require.Eventually(t, func() bool {
		tasks, err := os.ReadDir(dir)
		return err == nil && len(tasks) > 1
	}, 10*time.Second, 10*time.Millisecond, "the worker's runtime starts threads")

	require.NoError(t, lowestPriority([]int{pid}))
	tasks, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, task := range tasks {
		stat, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
		require.NoError(t, err)
		f := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])
		require.Equal(t, "19", string(f[16]), "thread %s's nice (field 19 of stat)", task.Name())
	}

	_ = stdin.Close()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	require.Error(t, lowestPriority([]int{pid}), "gone")
}
