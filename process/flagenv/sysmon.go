package flagenv

import (
	"os"
	"strings"
)

// SysmonAwakeEnv, set to 0 or false, leaves the Go runtime's monitor as Go
// ships it: KeepSysmonAwake does nothing.
const SysmonAwakeEnv = "ROOMCAST_SYSMON_AWAKE"

// schedtraceNever is the GODEBUG setting that keeps sysmon out of its deep
// sleep: a scheduler trace every 2,147,483,647 ms (24.8 days, the most
// the runtime takes).
const schedtraceNever = "schedtrace=2147483647"

// KeepSysmonAwake starts the program again in place (execve: the same pid,
// arguments and environment) with GODEBUG's schedtrace set as
// schedtraceNever, unless GODEBUG already sets schedtrace or
// ROOMCAST_SYSMON_AWAKE is 0 or false. A program that hosts a gateway calls
// it first thing. It returns when there is nothing to do, or when the
// restart failed (the program runs on as Go ships it); on Linux only.
//
// Why (docs/decisions.md, "The runtime's monitor"): Go's sysmon sleeps
// deeply while every P is idle and is woken by the next goroutine that
// enters a system call, after which it polls every 20 µs until the Ps are
// idle again. A gateway at hundreds of messages a second goes idle between
// them, and each message's first system call (nats-server reading the
// publisher's connection) wakes sysmon for another run of 20 µs sleeps:
// 2,800 timer sleeps and context switches a second at 200 messages/s, 9 %
// of the server's CPU at 20,000 deliveries/s. With a schedtrace period set,
// sysmon never sleeps deeply, and with nothing to retake it backs off to a
// wake every 10 ms: 100 a second, busy or idle. The trace itself is due
// when the machine's monotonic clock passes the period, and then every
// period: a machine up more than 24.8 days gets one "SCHED" line on stderr
// at the start and one every 24.8 days.
func KeepSysmonAwake() {
	if !sysmonAwake(os.Getenv(SysmonAwakeEnv), os.Getenv("GODEBUG")) {
		return
	}
	reexec(withGODEBUG(os.Environ(), schedtraceNever))
}

// sysmonAwake says whether KeepSysmonAwake restarts the program, given
// ROOMCAST_SYSMON_AWAKE and GODEBUG.
func sysmonAwake(setting, godebug string) bool {
	if setting == "0" || setting == "false" {
		return false
	}
	for _, kv := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(kv), "schedtrace=") {
			return false // the operator's setting, or this restart's
		}
	}
	return true
}

// withGODEBUG is env with setting added to GODEBUG (its last entry, the
// others kept, in order).
func withGODEBUG(env []string, setting string) []string {
	out := make([]string, 0, len(env)+1)
	godebug := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "GODEBUG="); ok {
			godebug = v
			continue
		}
		out = append(out, e)
	}
	if godebug != "" {
		setting = godebug + "," + setting
	}
	return append(out, "GODEBUG="+setting)
}
