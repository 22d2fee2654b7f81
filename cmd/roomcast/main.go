// Command roomcast runs the whole system in one process (`roomcast serve`:
// an embedded nats-server with JetStream plus the gateway, roomstate and sync
// services) and offers the operator's tools.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/bench"
)

const usage = `usage: roomcast COMMAND [flags]

commands:
  serve   run an embedded NATS with JetStream and every roomcast service
  bench   load-test a gateway (or the Socket.IO reference peer)

"roomcast COMMAND -h" lists a command's flags.`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(ctx, args)
	case "bench":
		err = bench.Main(ctx, args, os.Stdout)
	case "help", "-h", "--help":
		fmt.Println(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "roomcast: unknown command %q\n%s\n", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "roomcast:", err)
		os.Exit(1)
	}
}
