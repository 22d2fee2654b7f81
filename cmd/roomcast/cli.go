package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/flagenv"
)

// Exit codes a script can rely on.
const (
	exitOK      = 0
	exitFailure = 1 // NATS or a service failed, or answered with an error
	exitUsage   = 2 // bad flags or arguments (nothing was done)
)

// usageError is an error in the command line: exit code 2, nothing was done.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitCode maps a command's error to the process's exit code.
func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &u), errors.Is(err, flag.ErrHelp):
		return exitUsage
	case proto.CodeOf(err) == proto.CodeInvalidArgument:
		return exitUsage
	}
	return exitFailure
}

// opsCmd is what every operator command shares: the NATS connection, the
// subject mapping, a timeout for requests, and where output goes.
type opsCmd struct {
	common  flagenv.Common
	timeout time.Duration
	fs      *flagenv.Set
	out     io.Writer
	errOut  io.Writer

	store    proto.StoreConfig
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects proto.Subjects
}

func newOpsCmd(name, synopsis string, out, errOut io.Writer) *opsCmd {
	c := &opsCmd{out: out, errOut: errOut}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() {
		fmt.Fprintf(errOut, "usage: roomcast %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	c.fs = flagenv.New(fs)
	c.common.Bind(c.fs, "nats://127.0.0.1:4222")
	c.fs.Duration(&c.timeout, "timeout", "ROOMCAST_TIMEOUT", 5*time.Second, "how long to wait for NATS and services")
	return c
}

// parse parses args and checks that want positional arguments remain
// (-1: any number, at least one).
func (c *opsCmd) parse(args []string, want int) ([]string, error) {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	rest := c.fs.Args()
	if (want >= 0 && len(rest) != want) || (want < 0 && len(rest) == 0) {
		c.fs.Usage()
		return nil, usagef("%s: wrong number of arguments", c.fs.Name())
	}
	store, err := c.common.Store()
	if err != nil {
		return nil, usageError{err}
	}
	if err := flagenv.CheckNATSURL(c.common.NATSURL); err != nil {
		return nil, usageError{err}
	}
	c.store, c.subjects = store, store.Subjects
	return rest, nil
}

func (c *opsCmd) connect() error {
	nc, err := nats.Connect(c.common.NATSURL, nats.Name("roomcast-cli"), nats.Timeout(c.timeout))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", c.common.NATSURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	c.nc, c.js = nc, js
	return nil
}

func (c *opsCmd) close() {
	if c.nc != nil {
		c.nc.Close()
	}
}

// parseRoom parses a command line whose one argument is a room name.
func (c *opsCmd) parseRoom(args []string) (proto.Room, error) {
	rest, err := c.parse(args, 1)
	if err != nil {
		return proto.Room{}, err
	}
	return room(rest[0])
}

// room parses a room name argument.
func room(name string) (proto.Room, error) {
	r, err := proto.ParseRoom(name)
	if err != nil {
		return proto.Room{}, usageError{err}
	}
	return r, nil
}

// printJSON writes v as one JSON line.
func (c *opsCmd) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.out, "%s\n", b)
	return err
}

// request asks a roomcast service and prints its answer.
func (c *opsCmd) request(ctx context.Context, subject string, args any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var reply json.RawMessage
	if err := proto.Request(ctx, c.nc, subject, args, &reply); err != nil {
		return err
	}
	_, err := fmt.Fprintf(c.out, "%s\n", reply)
	return err
}
