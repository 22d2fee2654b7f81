// Command roomcast runs the whole system in one process (`roomcast serve`:
// an embedded nats-server with JetStream plus the gateway, roomstate and sync
// services) and offers the operator's tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/bench"
	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/proto"
)

func main() {
	if hostsGateway(os.Args[1:]) {
		flagenv.KeepSysmonAwake() // before anything starts: it may exec
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// hostsGateway says whether the command line runs a gateway in this
// process: serve, or a bench fleet's gateway.
func hostsGateway(args []string) bool {
	return len(args) > 0 && args[0] == "serve" || slices.Equal(args, []string{"bench", bench.ModeFleetGateway})
}

const (
	groupRun     = "run"
	groupOperate = "operate"
)

// newRoot is the command tree. Every command's flags are its own: help
// lists only what the command reads.
func newRoot(out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "roomcast",
		Short: "realtime rooms over NATS JetStream, and the operator's tools",
		Long: `roomcast runs the whole system in one process (serve) and operates a running one.

Output is JSON lines on stdout. Exit codes: 0 done, 1 failed (NATS or a
service), 2 bad command line (nothing done). Flags may come before or after
the arguments, as --flag or -flag.`,
		SilenceErrors: true, // run prints them: one line and a hint
		SilenceUsage:  true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.AddGroup(
		&cobra.Group{ID: groupRun, Title: "Run:"},
		&cobra.Group{ID: groupOperate, Title: "Operate (against ROOMCAST_NATS_URL, default nats://127.0.0.1:4222):"},
	)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	for _, c := range []*cobra.Command{serveCommand(out), benchCommand(out)} {
		c.GroupID = groupRun
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{
		publishCommand(out, errOut), tailCommand(out, errOut), replayCommand(out, errOut),
		stateCommand(out, errOut), historyCommand("changes", proto.SubjectSyncChanges, out, errOut),
		historyCommand("chat", proto.SubjectSyncChat, out, errOut), presenceCommand(out, errOut),
		streamsCommand(out, errOut), revokeCommand(out, errOut), kickCommand(out, errOut),
		tokenCommand(out, errOut),
	} {
		c.GroupID = groupOperate
		root.AddCommand(c)
	}
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	root := newRoot(out, errOut)
	if len(args) == 0 {
		root.SetOut(errOut)
		_ = root.Usage()
		return exitUsage
	}
	cmd := findCommand(root, args[0])
	if cmd == nil && !strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(errOut, "roomcast: unknown command %q\nRun 'roomcast --help' for the list of commands.\n", args[0])
		return exitUsage
	}
	if cmd != nil && !cmd.DisableFlagParsing {
		args = append(args[:1:1], longFlags(cmd, args[1:])...)
	}
	root.SetArgs(args)
	c, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	name := c.Name()
	if c == root {
		name = ""
	}
	code := exitCode(err)
	fmt.Fprintf(errOut, "%s: %v\n", strings.TrimSpace("roomcast "+name), err)
	if code == exitUsage {
		fmt.Fprintf(errOut, "Run '%s --help' for its flags and an example.\n", c.CommandPath())
	}
	return code
}

// findCommand is root's subcommand called name, nil if none. Cobra adds its
// completion helpers (__complete) only while executing: they are let
// through as the empty command.
func findCommand(root *cobra.Command, name string) *cobra.Command {
	for _, c := range root.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	if name == cobra.ShellCompRequestCmd || name == cobra.ShellCompNoDescRequestCmd {
		return &cobra.Command{}
	}
	return nil
}

// longFlags rewrites -name and -name=value to --name,
// so the single-dash spelling of Go's flag package, which roomcast used
// before cobra (scripts and docs have it), still works. A flag's value and
// everything after "--" are left alone.
func longFlags(cmd *cobra.Command, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if !strings.HasPrefix(a, "-") {
			out = append(out, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := cmd.Flags().Lookup(name)
		// Every flag of roomcast's is long but -h, so -frob is an
		// unknown --frob (not -f -r -o -b); -1 stays a number.
		if len(name) > 1 && (name[0] < '0' || name[0] > '9') {
			if !strings.HasPrefix(a, "--") {
				a = "-" + a
			}
			out = append(out, a)
			if f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
				i++
				out = append(out, args[i]) // the flag's value, whatever it looks like
			}
			continue
		}
		out = append(out, a)
	}
	return out
}

// usageArgs wraps an argument check so that its error is a usage error
// naming what the command wants.
func usageArgs(want string, check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usagef("want %s, got %d argument(s)", want, len(args))
		}
		return nil
	}
}

// benchCommand parses its own flags (it runs its workers as child processes
// with the same command line).
func benchCommand(out io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "bench MODE [flags]",
		Short: "load-test a gateway (or the Socket.IO reference peer); bench -h lists its modes and flags",
		Example: `  roomcast bench idle -sockets 5000
  roomcast bench fanout -compare -rate 1000`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.Main(cmd.Context(), args, out)
		},
	}
}

// exitCode maps a command's error to the process's exit code.
func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &u):
		return exitUsage
	case proto.CodeOf(err) == proto.CodeInvalidArgument:
		return exitUsage
	}
	return exitFailure
}
