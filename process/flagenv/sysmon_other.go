//go:build !linux

package flagenv

// reexec does nothing here: KeepSysmonAwake is for Linux, where the
// gateway's figures were taken.
func reexec([]string) {}
