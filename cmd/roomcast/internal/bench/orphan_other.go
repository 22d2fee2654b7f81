//go:build !linux

package bench

import "os/exec"

// dieWithParent: only Linux has a parent-death signal; elsewhere a tool
// that dies without stopping its servers leaves them running.
func dieWithParent(*exec.Cmd) {}
