package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

// serveCLI runs "roomcast serve ARGS…"; its error is what it printed on
// stderr when it did not exit 0.
func serveCLI(ctx context.Context, args []string) error {
	var errOut bytes.Buffer
	if code := run(ctx, append([]string{"serve"}, args...), io.Discard, &errOut); code != exitOK {
		return fmt.Errorf("exit %d: %s", code, errOut.String())
	}
	return nil
}

// A bad setting stops start-up with one clear error naming the setting,
// before anything starts.
func TestServeRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"unreadable key file", "ROOMCAST_JWT_PUBLIC_KEY", []string{"-jwt-public-key", filepath.Join(dir, "missing.pem")}},
		{"malformed NATS URL", "ROOMCAST_NATS_URL", []string{"-nats-url", "nats//nowhere"}},
		{"data dir not writable", "ROOMCAST_DATA_DIR", []string{"-data-dir", filepath.Join(file, "data")}},
		{"bad NATS address", "ROOMCAST_NATS_ADDR", []string{"-nats-addr", "4222"}},
		{"bad log level", "ROOMCAST_LOG_LEVEL", []string{"-log-level", "loud", "-data-dir", dir}},
		{"bad subject prefix", "ROOMCAST_SUBJECT_PREFIX", []string{"-subject-prefix", "a..b", "-data-dir", dir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := serveCLI(context.Background(), append(tc.args, "-http-addr", "127.0.0.1:0"))
			require.ErrorContains(t, err, tc.want)
		})
	}
	// The roomstate and sync services it runs read their own variables.
	for _, tc := range []struct{ env, value, want string }{
		{"ROOMCAST_SYNC_TAIL_MESSAGES", "many", "ROOMCAST_SYNC_TAIL_MESSAGES"},
		{"ROOMCAST_SYNC_TAIL_MESSAGES", "-2", "ROOMCAST_SYNC_*: sync: tail messages -2"},
		{"ROOMCAST_ROOMSTATE_BATCH_WAIT", "soon", "ROOMCAST_ROOMSTATE_BATCH_WAIT"},
		{"ROOMCAST_ROOMSTATE_BATCH_WAIT", "-1s", "ROOMCAST_ROOMSTATE_*: roomstate: BatchWait -1s"},
	} {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			err := serveCLI(context.Background(), []string{"-http-addr", "127.0.0.1:0", "-data-dir", dir})
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// TestServeConnectsInProcess: with the embedded server, the gateway,
// roomstate and sync connect to it in-process, not over loopback TCP.
func TestServeConnectsInProcess(t *testing.T) {
	started := make(chan *server.Server, 1)
	embeddedStarted = func(ns *server.Server) { started <- ns }
	t.Cleanup(func() { embeddedStarted = func(*server.Server) {} })
	dir := t.TempDir() // removed after serve stops (cleanups run last first)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveCLI(ctx, []string{"-http-addr", "127.0.0.1:0", "-nats-addr", "127.0.0.1:0",
			"-data-dir", dir, "-log-level", "error", "-jwt-secret", "0123456789abcdef0123456789abcdef"})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	var ns *server.Server
	select {
	case ns = <-started:
	case err := <-done:
		t.Fatalf("serve stopped: %v", err)
	}
	want := []string{"roomcast-gateway", "roomcast-roomstate", "roomcast-serve", "roomcast-sync"}
	require.Eventually(t, func() bool {
		cz, err := ns.Connz(&server.ConnzOptions{})
		if err != nil {
			return false
		}
		var inProcess []string
		for _, c := range cz.Conns {
			name, _, _ := strings.Cut(c.Name, " ")
			if c.Port == 0 {
				inProcess = append(inProcess, name)
			}
		}
		slices.Sort(inProcess)
		return slices.Equal(inProcess, want)
	}, 10*time.Second, 10*time.Millisecond, "every service's connection in-process")
}
