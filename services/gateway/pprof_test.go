package gateway

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPprofOnlyWhenEnabled: /debug/pprof/ is served with Pprof set, and is
// not there by default.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	e := newEnv(t)
	off := e.startGateway()
	on := e.startGateway(func(c *Config) { c.Pprof = true })
	for _, tc := range []struct {
		tg   *testGateway
		want int
	}{{off, http.StatusNotFound}, {on, http.StatusOK}} {
		res, err := http.Get(tc.tg.url + "/debug/pprof/heap?debug=1")
		require.NoError(t, err)
		res.Body.Close()
		require.Equal(t, tc.want, res.StatusCode)
	}
}
