package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// Pinned runs (-pin): the server on core 0 (a Go server with GOMAXPROCS=1),
// the load tool — coordinator and worker processes — on core 1, so that
// neither takes CPU from the other and the server's own limit is one core,
// unambiguous.
const (
	serverCore = "0"
	toolCore   = "1"
)

// pinTool moves every thread of this process to the tool's core; threads
// and processes started afterwards (worker processes included) inherit it.
// The servers are started under `taskset -c 0`, which overrides it.
func pinTool() error {
	if runtime.NumCPU() < 2 {
		return fmt.Errorf("-pin needs two cores (server on core %s, tool on core %s); this machine has %d", serverCore, toolCore, runtime.NumCPU())
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("-pin needs taskset (util-linux) on PATH")
	}
	out, err := exec.Command("taskset", "-a", "-p", "-c", toolCore, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pin the load tool to core %s: %v: %s", toolCore, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// pinNote is the line a pinned result carries.
func pinNote(target string) string {
	gomax := ", GOMAXPROCS=1"
	if target == targetPeer {
		gomax = "" // node: one event loop anyway
	}
	return fmt.Sprintf("pinned: server on core %s%s, load tool on core %s", serverCore, gomax, toolCore)
}
