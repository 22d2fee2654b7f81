package cfclient

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// The client against a real Centrifugo is tested in the load tool's package
// (TestCentrifugoProtocol, in `make bench`): it needs Centrifugo built.

func TestNextMessageSplitsAFrame(t *testing.T) {
	frame := []byte("{\"push\":{\"channel\":\"a\",\"pub\":{\"data\":1}}}\n{}\n{\"id\":2,\"subscribe\":{}}")
	var got []string
	for rest := frame; len(rest) > 0; {
		var msg []byte
		msg, rest = nextMessage(rest)
		got = append(got, string(msg))
	}
	require.Equal(t, []string{`{"push":{"channel":"a","pub":{"data":1}}}`, `{}`, `{"id":2,"subscribe":{}}`}, got)
}

func TestURL(t *testing.T) {
	require.Equal(t, "ws://127.0.0.1:8000/connection/websocket", URL("http://127.0.0.1:8000/"))
}

// FuzzNextMessage: cutting a frame into messages ends, loses no
// non-blank line and never returns a message with a newline in it.
func FuzzNextMessage(f *testing.F) {
	f.Add([]byte("{}\n{\"id\":1}"))
	f.Add([]byte("\n\n"))
	f.Add([]byte(" {} \r\n"))
	f.Fuzz(func(t *testing.T, frame []byte) {
		var n int
		for rest := frame; len(rest) > 0; {
			var msg []byte
			left := rest
			msg, rest = nextMessage(rest)
			if len(rest) >= len(left) {
				t.Fatalf("no progress on %q", left)
			}
			if bytes.IndexByte(msg, '\n') >= 0 {
				t.Fatalf("message %q holds a newline", msg)
			}
			if len(msg) > 0 {
				n++
			}
		}
		want := 0
		for _, line := range bytes.Split(frame, []byte("\n")) {
			if len(bytes.TrimSpace(line)) > 0 {
				want++
			}
		}
		if n != want {
			t.Fatalf("%d messages from %q, want %d", n, frame, want)
		}
	})
}
