package flagenv

import (
	"os"
	"syscall"
)

// reexec runs this program's executable again in place with env: the same
// inode (/proc/self/exe, even if the file was replaced since), arguments
// and pid. It returns only if execve failed.
func reexec(env []string) {
	_ = syscall.Exec("/proc/self/exe", os.Args, env)
}
