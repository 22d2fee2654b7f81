package flagenv

import (
	"os"
	"syscall"
)

// reexec runs this program's executable again in place with env: the same
// arguments and pid, and the same name in ps and top (the executable's
// path, not /proc/self/exe, whose name would be "exe"). It returns only
// if execve failed.
func reexec(env []string) {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, env)
}
