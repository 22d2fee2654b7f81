package bench

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// TestRoomstateMode: bench roomstate, on its in-process NATS and roomstate,
// sees every event it published reach KV, and reports the lag and the
// writes; bad flags are refused before anything runs.
func TestRoomstateMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out strings.Builder
	require.NoError(t, Main(ctx, []string{modeRoomstate, "-rate", "400", "-duration", "500ms", "-rooms", "4"}, &out))
	got := out.String()
	require.Contains(t, got, "publishing 200 events at 400/s to 4 rooms for 500ms\n")
	require.Regexp(t, regexp.MustCompile(`published 200 in \S+ \(\d+/s\); seen in KV: 200\n`), got)
	require.Regexp(t, regexp.MustCompile(`publish -> KV visible lag: p50 \S+  p90 \S+  p99 \S+  max \S+\n`), got)
	require.Regexp(t, regexp.MustCompile(`roomstate: \d+ KV writes in \d+ batches for 200 events`), got)

	for _, args := range [][]string{{"-rate", "0"}, {"-rooms", "-1"}, {"-duration", "0s"}, {"-batch-wait", "-1ms"}, {"extra"}, {"-no-such-flag"}} {
		err := Main(ctx, append([]string{modeRoomstate}, args...), &out)
		require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err), "%v: %v", args, err)
	}
}
