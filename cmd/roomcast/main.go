// Command roomcast runs the whole system in one process (`roomcast serve`:
// an embedded nats-server with JetStream plus the gateway, roomstate and sync
// services) and offers the operator's tools.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/bench"
	"github.com/roomcast/roomcast/proto"
)

const usage = `usage: roomcast COMMAND [flags] [arguments]

run:
  serve                  an embedded NATS with JetStream and every roomcast service
  bench MODE             load-test a gateway (or the Socket.IO reference peer)

operate (against ROOMCAST_NATS_URL, default nats://127.0.0.1:4222):
  publish ROOM EVENT ID  publish an event to a room (-diff, -data), validated
  tail ROOM              print live broadcasts as gateways receive them
  replay ROOM            read a room's history back (-since | -from-seq, -to-seq),
                         print it, or -to-room ROOM / -rebroadcast it
  state ROOM             the room's lastBroadcastTimestamp and seq
  changes ROOM           what changed since -since MS or -after-seq N
  chat ROOM              chat messages since -since MS or -after-seq N
  presence USER...       whether users are active
  streams ensure|info    create/update or show stream ROOMS and the buckets
  revoke USER            disconnect every socket of USER on every gateway
  kick ROOM USER         remove USER's sockets from ROOM on every gateway

Output is JSON lines on stdout. Exit codes: 0 done, 1 failed (NATS or a
service), 2 bad command line (nothing done). "roomcast COMMAND -h" lists a
command's flags.`

type command func(ctx context.Context, args []string, out, errOut io.Writer) error

var commands = map[string]command{
	"serve": func(ctx context.Context, args []string, _, _ io.Writer) error { return serve(ctx, args) },
	"bench": func(ctx context.Context, args []string, out, _ io.Writer) error {
		return bench.Main(ctx, args, out)
	},
	"publish":  publishCmd,
	"tail":     tailCmd,
	"replay":   replayCmd,
	"state":    stateCmd,
	"changes":  historyCmd("changes", proto.SubjectSyncChanges),
	"chat":     historyCmd("chat", proto.SubjectSyncChat),
	"presence": presenceCmd,
	"streams":  streamsCmd,
	"revoke":   revokeCmd,
	"kick":     kickCmd,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(errOut, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(errOut, "roomcast: unknown command %q\n\n%s\n", args[0], usage)
		return exitUsage
	}
	err := cmd(ctx, args[1:], out, errOut)
	if err != nil {
		fmt.Fprintf(errOut, "roomcast %s: %v\n", args[0], err)
	}
	return exitCode(err)
}
