package gateway

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOriginMatches(t *testing.T) {
	for _, tc := range []struct {
		pattern, origin string
		want            bool
	}{
		{"*", "https://anything.example", true},
		{"https://app.example", "https://APP.example", true},
		{"https://app.example", "https://app.example:8443", false},
		{"http://localhost:*", "http://localhost:5173", true},
		{"http://localhost:*", "http://localhost", true},
		{"http://localhost:*", "http://localhost:65535", true},
		{"http://localhost:*", "http://localhost:123456", false},
		{"http://localhost:*", "http://localhost:", false},
		{"http://localhost:*", "http://localhost:80x", false},
		{"http://localhost:*", "http://localhost.evil.example", false},
		{"http://localhost:*", "http://localhost.evil.example:80", false},
		{"http://localhost:*", "http://localhost:80@evil.example", false},
		{"http://localhost:*", "https://localhost:443", false},
		{"http://localhost:*", "http://localhos", false},
		{"http://127.0.0.1:*", "http://127.0.0.1:8090", true},
		{"http://127.0.0.1:*", "http://127.0.0.10:8090", false},
	} {
		require.Equal(t, tc.want, originMatches(tc.pattern, tc.origin), "%s vs %s", tc.pattern, tc.origin)
	}
}

// FuzzOriginMatches: an origin a host:* pattern lets in is that scheme and
// host exactly, with at most a numeric port.
func FuzzOriginMatches(f *testing.F) {
	for _, s := range []string{"http://localhost:5173", "http://localhost", "http://localhost.evil:1", "http://localhost:1@x", "http://localhost:", "http://LOCALHOST:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, origin string) {
		for _, pattern := range DevOrigins {
			if !originMatches(pattern, origin) {
				continue
			}
			u, err := url.Parse(origin)
			require.NoError(t, err, origin)
			want, _ := url.Parse(strings.TrimSuffix(pattern, ":*"))
			require.True(t, strings.EqualFold(u.Scheme, want.Scheme), origin)
			require.True(t, strings.EqualFold(u.Hostname(), want.Hostname()), origin)
			require.Empty(t, u.User, origin)
			require.True(t, u.Path == "" && u.RawQuery == "" && u.Fragment == "", origin)
		}
	})
}

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
