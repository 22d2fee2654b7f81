package main

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

// Every NATS configuration under deploy/ parses with nats-server's own parser.
func TestDeployNATSConfigsParse(t *testing.T) {
	files, err := filepath.Glob("../../deploy/nats/*.conf")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		o, err := server.ProcessConfigFile(f)
		require.NoError(t, err, f)
		require.True(t, o.JetStream, "%s enables JetStream", f)
	}
}
