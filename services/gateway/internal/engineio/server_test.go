package engineio

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/stretchr/testify/require"
)

// TestOpenPacketWithTheUpgrade: the Engine.IO open packet goes out in the
// 101 response's write, and the client reads it as the first frame; a
// refused upgrade is answered unchanged.
func TestOpenPacketWithTheUpgrade(t *testing.T) {
	opened := make(chan bool, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ow := &openingWriter{ResponseWriter: w, open: TextFrame([]byte(`0{"sid":"s1"}`))}
		conn, _, _, err := (&ws.HTTPUpgrader{}).Upgrade(r, ow)
		opened <- err == nil && ow.opened
		if err == nil {
			_ = conn.Close()
		}
	}))
	t.Cleanup(srv.Close)

	conn, br, _, err := ws.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.True(t, <-opened)
	require.NotNil(t, br, "the open packet arrived with the 101")
	require.Positive(t, br.Buffered())
	f, err := ws.ReadFrame(br)
	require.NoError(t, err)
	require.Equal(t, `0{"sid":"s1"}`, string(f.Payload))

	resp, err := http.Get(srv.URL) // not an upgrade: refused as before
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.False(t, <-opened)
}
