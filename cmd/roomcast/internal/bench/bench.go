// Package bench is roomcast's load tool: it drives real sockets over the
// Socket.IO protocol and publishes through NATS, against roomcast or a
// reference peer, and reports throughput, latency and server resources.
package bench

import (
	"context"
	"errors"
	"io"
)

// Main runs `roomcast bench ARGS`.
func Main(ctx context.Context, args []string, stdout io.Writer) error {
	return errors.New("bench: not built yet")
}
