package engineio

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
		{"http://localhost:*", "http://LOCALHOST:*", false}, // the pattern is no origin (FuzzOriginMatches found it)
		{"http://localhost:5173", "http://LOCALHOST:5173", true},
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
		for _, pattern := range []string{"http://localhost:*", "http://127.0.0.1:*"} { // the gateway's DevOrigins
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

func TestQueryValue(t *testing.T) {
	q := []byte("EIO=4&transport=websocket&token=a%2Eb+c&EIO=3&t%6Fk=x")
	require.Equal(t, "4", queryValue(q, "EIO"))
	require.Equal(t, "websocket", queryValue(q, "transport"))
	require.Equal(t, "a.b c", queryValue(q, "token"))
	require.Equal(t, "", queryValue(q, "missing"))
	require.Equal(t, "", queryValue([]byte("EIO=%zz"), "EIO"))
}

// TestCheck: the one check both upgrade paths ask, refusal by refusal, in
// the order a request meets them; a Bearer header wins over the query.
func TestCheck(t *testing.T) {
	draining := false
	var refused []string
	h := &Handshake{
		Origins:       []string{"https://app.example"},
		Draining:      func() bool { return draining },
		OriginRefused: func(origin, _ string) { refused = append(refused, origin) },
	}
	ok := Request{EIO: "4", Transport: "websocket", Token: "q", Origin: "https://app.example"}
	for _, tc := range []struct {
		name   string
		edit   func(*Request)
		status int
		reason string
	}{
		{"EIO=3", func(r *Request) { r.EIO = "3" }, http.StatusBadRequest, "Engine.IO version"},
		{"no EIO", func(r *Request) { r.EIO = "" }, http.StatusBadRequest, "Engine.IO version"},
		{"flashsocket", func(r *Request) { r.Transport = "flashsocket" }, http.StatusBadRequest, "unsupported transport"},
		{"origin", func(r *Request) { r.Origin = "https://evil.example" }, http.StatusForbidden, "origin not allowed"},
		{"EIO before origin", func(r *Request) { r.EIO, r.Origin = "3", "https://evil.example" }, http.StatusBadRequest, "Engine.IO version"},
	} {
		r := ok
		tc.edit(&r)
		token, ref := h.Check(r)
		require.NotNil(t, ref, tc.name)
		require.Empty(t, token, tc.name)
		require.Equal(t, tc.status, ref.Status, tc.name)
		require.Contains(t, ref.Reason, tc.reason, tc.name)
	}
	require.Equal(t, []string{"https://evil.example"}, refused, "told of the origin refused, once")

	token, ref := h.Check(ok)
	require.Nil(t, ref)
	require.Equal(t, "q", token)
	r := ok
	r.Authorization = "Bearer  h.e.ader "
	token, _ = h.Check(r)
	require.Equal(t, "h.e.ader", token, "the header wins")
	r.Authorization, r.Origin = "Basic x", ""
	token, ref = h.Check(r)
	require.Nil(t, ref, "no Origin (not a browser): allowed")
	require.Equal(t, "q", token, "not a Bearer: the query's")

	draining = true
	_, ref = h.Check(ok)
	require.Equal(t, http.StatusServiceUnavailable, ref.Status)
}
