package proto_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func TestParseAuthzJoinReply(t *testing.T) {
	for _, yes := range []string{`{"allow":true}`, `{"allow": true}`, " {\n  \"allow\" : true\n}\n"} {
		allow, err := proto.ParseAuthzJoinReply([]byte(yes))
		require.NoError(t, err, yes)
		require.True(t, allow, yes)
	}
	for _, no := range []string{`{"allow":false}`, `{"allow": false}`} {
		allow, err := proto.ParseAuthzJoinReply([]byte(no))
		require.NoError(t, err, no)
		require.False(t, allow, no)
	}
	// Answers encoding/json would read as yes, and other non-answers: denied
	// with an error.
	for _, bad := range []string{
		`{"Allow":true}`, `{"ALLOW":true}`, `{"allow":false,"allow":true}`, `{"allow":true,"allow":true}`,
		`{"allow":true,"extra":1}`, `{"allow":"true"}`, `{"allow":1}`, `{"allow":true}x`, `[{"allow":true}]`,
		`{"allow":tru`, ``, `null`, `true`, `{}`, `{"allow":true}{"allow":true}`, `{"\u0061llow":true}`,
	} {
		allow, err := proto.ParseAuthzJoinReply([]byte(bad))
		require.Error(t, err, bad)
		require.False(t, allow, bad)
	}
}

// FuzzParseAuthzJoinReply: whatever the bytes, a yes is exactly one field
// "allow" holding the literal true, spelled with nothing but JSON
// whitespace around its tokens.
func FuzzParseAuthzJoinReply(f *testing.F) {
	for _, s := range []string{`{"allow":true}`, `{"allow": false}`, `{"Allow":true}`, `{"allow":false,"allow":true}`, `{"allow":1}`, " {\"allow\"\t:true} "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		allow, err := proto.ParseAuthzJoinReply(data)
		if err != nil {
			require.False(t, allow)
			return
		}
		if !allow {
			return
		}
		var m map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(data, &m))
		require.Len(t, m, 1)
		require.Equal(t, "true", string(m["allow"]))
		n := 0
		for _, c := range data {
			switch c {
			case ' ', '\t', '\n', '\r':
			default:
				n++
			}
		}
		require.Equal(t, len(`{"allow":true}`), n, "only whitespace besides the answer: %q", data)
	})
}
