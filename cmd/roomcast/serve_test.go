package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

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
			err := serve(context.Background(), append(tc.args, "-http-addr", "127.0.0.1:0"))
			require.ErrorContains(t, err, tc.want)
		})
	}
}
