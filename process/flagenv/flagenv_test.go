package flagenv_test

import (
	"flag"
	"io"
	"os"
	"runtime/debug"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/flagenv"
)

func newSet() *flagenv.Set {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return flagenv.New(fs)
}

func TestPrecedence(t *testing.T) {
	t.Setenv("ROOMCAST_A", "from-env")
	t.Setenv("ROOMCAST_D", "3s")
	var a, b string
	var d time.Duration
	s := newSet()
	s.String(&a, "a", "ROOMCAST_A", "default", "")
	s.String(&b, "b", "ROOMCAST_B_UNSET", "default", "")
	s.Duration(&d, "d", "ROOMCAST_D", time.Second, "")
	require.NoError(t, s.Parse(nil))
	require.Equal(t, "from-env", a, "environment beats default")
	require.Equal(t, "default", b)
	require.Equal(t, 3*time.Second, d)

	s = newSet()
	s.String(&a, "a", "ROOMCAST_A", "default", "")
	require.NoError(t, s.Parse([]string{"-a", "from-flag"}))
	require.Equal(t, "from-flag", a, "flag beats environment")
}

func TestBadEnvironmentNamesTheVariable(t *testing.T) {
	t.Setenv("ROOMCAST_N", "many")
	var n int
	s := newSet()
	s.Int(&n, "n", "ROOMCAST_N", 1, "")
	require.ErrorContains(t, s.Parse(nil), "ROOMCAST_N")
}

func TestCommon(t *testing.T) {
	for _, bad := range []string{"localhost:4222", "http://x:1", "nats://", "nats://a b"} {
		require.ErrorContains(t, flagenv.CheckNATSURL(bad), "ROOMCAST_NATS_URL", bad)
	}
	require.NoError(t, flagenv.CheckNATSURL("nats://127.0.0.1:4222,tls://n2:4222"))

	c := flagenv.Common{SubjectPrefix: "a..b", Replicas: 1, MaxAge: time.Hour, LogLevel: "info"}
	_, err := c.Store()
	require.ErrorContains(t, err, "ROOMCAST_SUBJECT_PREFIX")
	c = flagenv.Common{Replicas: 9, MaxAge: time.Hour}
	_, err = c.Store()
	require.ErrorContains(t, err, "ROOMCAST_REPLICAS")
	c = flagenv.Common{LogLevel: "loud"}
	_, err = c.Logger(io.Discard)
	require.ErrorContains(t, err, "ROOMCAST_LOG_LEVEL")
}

// TestRecoveryTTL: ROOMCAST_RECOVERY_TTL is a duration, 0 turns recovery
// off, and it is SESSIONS's TTL; anything else is refused by name.
func TestRecoveryTTL(t *testing.T) {
	for env, want := range map[string]time.Duration{"10m": 10 * time.Minute, "0": -1, " 90s ": 90 * time.Second} {
		t.Setenv("ROOMCAST_RECOVERY_TTL", env)
		var c flagenv.Common
		c.Bind(newSet(), "nats://127.0.0.1:4222")
		c.MaxAge, c.Replicas = time.Hour, 1
		require.Equal(t, want, c.RecoveryTTL, env)
		store, err := c.Store()
		require.NoError(t, err)
		if want > 0 {
			require.Equal(t, want, store.SessionTTL)
		} else {
			require.Zero(t, store.SessionTTL, "off: the bucket keeps its default")
		}
	}
	for _, bad := range []string{"soon", "-5m"} {
		t.Setenv("ROOMCAST_RECOVERY_TTL", bad)
		var c flagenv.Common
		c.Bind(newSet(), "nats://127.0.0.1:4222")
		c.MaxAge, c.Replicas = time.Hour, 1
		_, err := c.Store()
		require.ErrorContains(t, err, "ROOMCAST_RECOVERY_TTL", bad)
	}
}

// TestGCPercent: the target is set unless GOGC is, and GOGC wins.
func TestGCPercent(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "")
	os.Unsetenv("GOGC")
	flagenv.GCPercent(50)
	require.Equal(t, 50, debug.SetGCPercent(100))

	t.Setenv("GOGC", "100")
	flagenv.GCPercent(50)
	require.Equal(t, 100, debug.SetGCPercent(100), "GOGC in the environment wins")
}
