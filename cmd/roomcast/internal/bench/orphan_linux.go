package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill cmd's process if the tool dies without
// stopping it (a crash, SIGKILL): a gateway left behind holds its sockets
// and ports until someone finds it.
func dieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
