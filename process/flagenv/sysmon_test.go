package flagenv

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSysmonAwake(t *testing.T) {
	for _, c := range []struct {
		setting, godebug string
		want             bool
	}{
		{"", "", true},
		{"1", "", true},
		{"true", "madvdontneed=1", true},
		{"", "schedtrace=0", false},                  // the operator's own
		{"", "madvdontneed=1, schedtrace=50", false}, // among others
		{"", "scheddetail=1", true},
		{"", "xschedtrace=1", true},
		{"0", "", false},
		{"false", "", false},
	} {
		assert.Equal(t, c.want, sysmonAwake(c.setting, c.godebug), "%q %q", c.setting, c.godebug)
	}
}

func TestWithGODEBUG(t *testing.T) {
	require.Equal(t, []string{"A=1", "GODEBUG=s=1"}, withGODEBUG([]string{"A=1"}, "s=1"))
	require.Equal(t, []string{"A=1", "B=2", "GODEBUG=x=1,y=2,s=1"}, withGODEBUG([]string{"A=1", "GODEBUG=x=1,y=2", "B=2"}, "s=1"))
	require.Equal(t, []string{"GODEBUG=s=1"}, withGODEBUG([]string{"GODEBUG="}, "s=1"))
}

// sysmonChildEnv marks the test binary run as TestKeepSysmonAwake's child.
const sysmonChildEnv = "FLAGENV_SYSMON_CHILD"

// TestKeepSysmonAwakeChild is the child: it prints its pid and name, calls
// KeepSysmonAwake, and prints them and GODEBUG (after a restart, the
// restarted program prints the first line again, then the second).
func TestKeepSysmonAwakeChild(t *testing.T) {
	if os.Getenv(sysmonChildEnv) == "" {
		t.Skip("run by TestKeepSysmonAwake")
	}
	comm, _ := os.ReadFile("/proc/self/comm") // the name ps and top show
	fmt.Printf("before %d %s\n", os.Getpid(), strings.TrimSpace(string(comm)))
	KeepSysmonAwake()
	comm, _ = os.ReadFile("/proc/self/comm")
	fmt.Printf("after %d %s %s\n", os.Getpid(), strings.TrimSpace(string(comm)), os.Getenv("GODEBUG"))
}

// TestKeepSysmonAwake: the program is started again in place (same pid)
// with schedtrace added to GODEBUG, once; not when GODEBUG sets schedtrace
// or ROOMCAST_SYSMON_AWAKE=0.
func TestKeepSysmonAwake(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	run := func(env ...string) []string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKeepSysmonAwakeChild$", "-test.count=1")
		cmd.Env = []string{sysmonChildEnv + "=1"}
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, "GODEBUG=") && !strings.HasPrefix(e, SysmonAwakeEnv+"=") {
				cmd.Env = append(cmd.Env, e)
			}
		}
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "before ") || strings.HasPrefix(l, "after ") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	lines := run("GODEBUG=madvdontneed=1")
	require.Len(t, lines, 3, "%q: started again once", lines)
	pidComm := strings.TrimPrefix(lines[0], "before ") // the same pid and name after
	require.Equal(t, "before "+pidComm, lines[1])
	require.Equal(t, "after "+pidComm+" madvdontneed=1,"+schedtraceNever, lines[2])

	lines = run("GODEBUG=schedtrace=0")
	require.Len(t, lines, 2, "%q", lines)
	require.True(t, strings.HasSuffix(lines[1], " schedtrace=0"), lines[1])

	lines = run(SysmonAwakeEnv + "=0")
	require.Len(t, lines, 2, "%q", lines)
	require.NotContains(t, lines[1], "schedtrace")
}
