// Command roomstate runs roomcast's roomstate service against an existing NATS.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/roomcast/roomcast/proto/flagenv"
	"github.com/roomcast/roomcast/services/roomstate"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "roomstate:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var (
		common flagenv.Common
		cfg    roomstate.Config
	)
	fs := flagenv.New(flag.NewFlagSet("roomstate", flag.ContinueOnError))
	common.Bind(fs, "nats://127.0.0.1:4222")
	cfg.Bind(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	store, err := common.Store()
	if err != nil {
		return err
	}
	log, err := common.Logger(os.Stderr)
	if err != nil {
		return err
	}
	cfg.NATSURL = common.NATSURL
	cfg.Store = store
	cfg.Logger = log
	return roomstate.Run(ctx, cfg)
}
