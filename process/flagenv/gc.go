package flagenv

import (
	"os"
	"runtime/debug"
)

// GatewayGCPercent is the collector's target for processes that host a
// gateway. Most of a gateway's heap is long-lived socket state, and it
// allocates little per delivery (a frame is encoded once per broadcast), so
// collecting when the heap has grown by half instead of doubled costs little
// CPU and holds about a fifth less memory per idle socket
// (docs/performance-history.md, "The gateway's performance work").
const GatewayGCPercent = 50

// GCPercent sets the collector's target to p unless GOGC is set: an
// operator's setting wins.
func GCPercent(p int) {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(p)
	}
}
