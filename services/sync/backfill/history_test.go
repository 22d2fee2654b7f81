package backfill

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

func TestReachesBack(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	seq := func(n uint64) start { return start{afterSeq: n} }
	at := func(d time.Duration) start { return start{byTime: true, at: t0.Add(d)} }
	tests := []struct {
		name  string
		start start
		state jetstream.StreamState
		want  bool
	}{
		{"empty young stream, from the start", seq(0), jetstream.StreamState{}, true},
		{"young stream never lost anything", seq(0), jetstream.StreamState{Msgs: 5, FirstSeq: 1, LastSeq: 5, FirstTime: t0}, true},
		{"cursor inside what is kept", seq(9), jetstream.StreamState{Msgs: 5, FirstSeq: 10, LastSeq: 14}, true},
		{"cursor just before what is kept", seq(8), jetstream.StreamState{Msgs: 5, FirstSeq: 10, LastSeq: 14}, false},
		{"everything expired, cursor at the end", seq(14), jetstream.StreamState{FirstSeq: 15, LastSeq: 14}, true},
		{"everything expired, cursor before the end", seq(13), jetstream.StreamState{FirstSeq: 15, LastSeq: 14}, false},
		{"cursor from an earlier stream", seq(20), jetstream.StreamState{Msgs: 5, FirstSeq: 1, LastSeq: 5}, false},

		{"time, young stream, long ago", at(-24 * time.Hour), jetstream.StreamState{Msgs: 5, FirstSeq: 1, LastSeq: 5, FirstTime: t0}, true},
		{"time, from the beginning, nothing lost", start{byTime: true}, jetstream.StreamState{Msgs: 5, FirstSeq: 1, LastSeq: 5, FirstTime: t0}, true},
		{"time, from the beginning, something lost", start{byTime: true}, jetstream.StreamState{Msgs: 5, FirstSeq: 3, LastSeq: 7, FirstTime: t0}, false},
		{"time, after the first kept message", at(time.Second), jetstream.StreamState{Msgs: 5, FirstSeq: 3, LastSeq: 7, FirstTime: t0}, true},
		{"time, at the first kept message", at(0), jetstream.StreamState{Msgs: 5, FirstSeq: 3, LastSeq: 7, FirstTime: t0}, false},
		{"time, before the first kept message", at(-time.Second), jetstream.StreamState{Msgs: 5, FirstSeq: 3, LastSeq: 7, FirstTime: t0}, false},
		{"time, all expired, after the last", at(time.Second), jetstream.StreamState{FirstSeq: 8, LastSeq: 7, LastTime: t0}, true},
		{"time, all expired, before the last", at(-time.Second), jetstream.StreamState{FirstSeq: 8, LastSeq: 7, LastTime: t0}, false},
		{"time, all expired, last time unknown", at(time.Second), jetstream.StreamState{FirstSeq: 8, LastSeq: 7}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, reachesBack(tt.start, tt.state))
		})
	}
}

func TestStartOf(t *testing.T) {
	require.Equal(t, start{afterSeq: 7}, startOf(cursorAfter(7), time.Minute))
	since := int64(1_700_000_000_000)
	st := startOf(cursorSince(since), 5*time.Minute)
	require.True(t, st.byTime)
	require.Equal(t, time.UnixMilli(since).Add(-5*time.Minute), st.at)
	// A margin reaching before the epoch reads from the beginning.
	require.Equal(t, start{byTime: true}, startOf(cursorSince(1000), time.Hour))
}
