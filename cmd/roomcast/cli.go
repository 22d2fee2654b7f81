package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/proto"
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

// opsCmd is what every operator command shares: the NATS connection, the
// subject mapping, a timeout for requests, and where output goes.
type opsCmd struct {
	common  flagenv.Common
	timeout time.Duration
	// fs holds the shared settings the command reads, bound to their
	// ROOMCAST_* variables; the rest keep their defaults.
	fs     *flagenv.Set
	reads  opsSettings
	out    io.Writer
	errOut io.Writer

	store    proto.StoreConfig
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects proto.Subjects
}

// opsSettings says which shared settings beyond the NATS URL and the
// timeout a command reads, so its help lists only those.
type opsSettings int

const (
	readsSubjects    opsSettings = 1 << iota // --subject-prefix
	readsStore                               // --replicas, --max-age, --max-token-lifetime (streams ensure)
	readsRevocations                         // --replicas, --max-token-lifetime (revoke, which may create REVOCATIONS)
)

func newOpsCmd(reads opsSettings, out, errOut io.Writer) *opsCmd {
	c := &opsCmd{out: out, errOut: errOut, reads: reads}
	all := flag.NewFlagSet("common", flag.ContinueOnError)
	c.fs = flagenv.New(all)
	c.common.Bind(c.fs, "nats://127.0.0.1:4222")
	c.fs.Duration(&c.timeout, "timeout", "ROOMCAST_TIMEOUT", 5*time.Second, "how long to wait for NATS and services")
	return c
}

// command adds c's shared flags to cmd and returns it.
func (c *opsCmd) command(cmd *cobra.Command) *cobra.Command {
	names := []string{"nats-url", "timeout"}
	if c.reads&readsSubjects != 0 {
		names = append(names, "subject-prefix")
	}
	if c.reads&readsStore != 0 {
		names = append(names, "subject-prefix", "replicas", "max-age", "max-token-lifetime")
	}
	if c.reads&readsRevocations != 0 {
		names = append(names, "replicas", "max-token-lifetime")
	}
	for _, n := range names {
		cmd.Flags().AddGoFlag(c.fs.Lookup(n))
	}
	return cmd
}

// ready checks the shared settings once the command line is parsed.
func (c *opsCmd) ready() error {
	// Parse(nil) parses nothing: it reports the first bad ROOMCAST_* value.
	if err := c.fs.Parse(nil); err != nil {
		return usageError{err}
	}
	store, err := c.common.Store()
	if err != nil {
		return usageError{err}
	}
	if err := flagenv.CheckNATSURL(c.common.NATSURL); err != nil {
		return usageError{err}
	}
	c.store, c.subjects = store, store.Subjects
	return nil
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
