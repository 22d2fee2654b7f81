package flagenv

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/roomcast/roomcast/proto"
)

// Service is what a service's main hands Main: the settings every program
// shares, read and checked.
type Service struct {
	Common Common
	Store  proto.StoreConfig
	Logger zerolog.Logger
}

// Main is the whole of a service's main: it binds the common flags and the
// service's own (bind), parses the command line and the environment, and
// runs run until SIGINT or SIGTERM. A bad setting or a failed run exits 1
// with one line on stderr naming the program; -h exits 0.
func Main(name string, bind func(*Set), run func(ctx context.Context, s Service) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := mainErr(ctx, name, os.Args[1:], bind, run)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func mainErr(ctx context.Context, name string, args []string, bind func(*Set), run func(context.Context, Service) error) error {
	var s Service
	fs := New(flag.NewFlagSet(name, flag.ContinueOnError))
	s.Common.Bind(fs, "nats://127.0.0.1:4222")
	bind(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if s.Store, err = s.Common.Store(); err != nil {
		return err
	}
	if s.Logger, err = s.Common.Logger(os.Stderr); err != nil {
		return err
	}
	return run(ctx, s)
}
