package flagenv

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestMainReadsSettingsBeforeRunning(t *testing.T) {
	var own string
	bind := func(s *Set) { s.String(&own, "own", "ROOMCAST_TEST_OWN", "x", "") }
	ran := false
	run := func(_ context.Context, s Service) error {
		ran = true
		require.Equal(t, "nats://n1:4222", s.Common.NATSURL)
		require.Equal(t, 3, s.Store.Replicas)
		require.Equal(t, time.Hour, s.Store.MaxAge)
		require.Equal(t, "y", own)
		return nil
	}
	t.Setenv("ROOMCAST_MAX_AGE", "1h")
	require.NoError(t, mainErr(context.Background(), "svc", []string{"-nats-url", "nats://n1:4222", "-replicas", "3", "-own", "y"}, bind, run))
	require.True(t, ran)

	ran = false
	err := mainErr(context.Background(), "svc", []string{"-log-level", "loud"}, bind, run)
	require.ErrorContains(t, err, "ROOMCAST_LOG_LEVEL")
	require.False(t, ran, "a bad setting stops before the service starts")
}
