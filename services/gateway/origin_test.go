package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDevOriginsOnTheWire: a page on localhost (any port) connects; one on
// another host is refused before the upgrade, on both listeners.
func TestDevOriginsOnTheWire(t *testing.T) {
	e := newEnv(t)
	for _, read := range []bool{false, true} {
		tg := e.startGateway(func(c *Config) { c.AllowedOrigins = DevOrigins; c.ReadGoroutines = read })
		for _, ok := range []string{"http://localhost:5173", "http://127.0.0.1:8090"} {
			c, err := dial(t, tg, "", http.Header{"Origin": {ok}})
			require.NoError(t, err, ok)
			require.True(t, strings.HasPrefix(c.next(), "0{"))
		}
		for _, bad := range []string{"http://localhost.evil.example:5173", "https://evil.example"} {
			_, err := dial(t, tg, "", http.Header{"Origin": {bad}})
			require.ErrorContains(t, err, "403", bad)
		}
	}
}
