package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// TestHTTPBatch: the peer's publisher sends a tick's envelopes in one POST
// of [{"room","data"},…] (an empty tick sends nothing), Centrifugo's with
// its API key; a batch answered other than 200 is counted failed whole and
// said with the answer.
func TestHTTPBatch(t *testing.T) {
	var bodies []string
	var keys []string
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		keys = append(keys, r.Header.Get("X-API-Key"))
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"replies":[{}]}`))
	}))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	room, err := proto.ParseRoom("board-b1-tasks")
	require.NoError(t, err)
	env := proto.Envelope{ID: "e1", UpdatedAt: 1}
	envJSON := `{"event":"","id":"e1","updatedAt":1}`

	p := newPeerPublisher(srv.URL)
	require.NoError(t, p.flush(ctx))
	require.Empty(t, bodies, "an empty tick sends nothing")
	require.NoError(t, p.add(ctx, room, env))
	require.NoError(t, p.add(ctx, room, env))
	failed, err := p.wait(ctx)
	require.NoError(t, err)
	require.Zero(t, failed)
	require.Len(t, bodies, 1)
	require.JSONEq(t, `[{"room":"board-b1-tasks","data":`+envJSON+`},{"room":"board-b1-tasks","data":`+envJSON+`}]`, bodies[0])

	status = http.StatusServiceUnavailable
	require.NoError(t, p.add(ctx, room, env))
	require.NoError(t, p.add(ctx, room, env))
	failed, err = p.wait(ctx)
	require.ErrorContains(t, err, "publish to the peer: HTTP 503")
	require.EqualValues(t, 2, failed)

	status = http.StatusOK
	c := newCentrifugoPublisher(srv.URL, "k1")
	require.NoError(t, c.add(ctx, room, env))
	failed, err = c.wait(ctx)
	require.NoError(t, err)
	require.Zero(t, failed)
	require.Equal(t, "k1", keys[len(keys)-1])
	require.JSONEq(t, `{"commands":[{"publish":{"channel":"board-b1","data":`+envJSON+`}}]}`, bodies[len(bodies)-1])
}
