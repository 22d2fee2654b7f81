package proto_test

import (
	"encoding/json"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

var update = flag.Bool("update", false, "rewrite contract.json from proto.Contract()")

// TestContractJSON fails when contract.json, which other languages' clients
// test themselves against, no longer says what this package declares.
// Rewrite it with `go generate ./proto` (or go test -run TestContractJSON -update).
func TestContractJSON(t *testing.T) {
	want, err := json.MarshalIndent(proto.Contract(), "", "  ")
	require.NoError(t, err)
	want = append(want, '\n')
	if *update {
		require.NoError(t, os.WriteFile("contract.json", want, 0o644))
	}
	got, err := os.ReadFile("contract.json")
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "proto/contract.json is stale: run `go generate ./proto`")
}

func TestContractAgreesWithDeclarations(t *testing.T) {
	c := proto.Contract()
	require.Equal(t, "endpoint", c.IncomingEvent)
	require.Equal(t, "broadcast", c.OutgoingEvent)
	require.Len(t, c.Events, len(proto.Events))
	for i, e := range proto.Events {
		require.Equal(t, string(e), c.Events[i].Name)
		require.Equal(t, e.Op().String(), c.Events[i].Op)
		require.Len(t, c.Events[i].RoomKinds, len(e.RoomKinds()))
	}
	require.Len(t, c.Endpoints, len(proto.Endpoints))
	require.Len(t, c.ErrorCodes, len(proto.Codes))
	require.Len(t, c.RoomKinds, 7)

	// Every pattern, with its placeholders filled by valid ids, parses to a
	// room of that kind, and the id regexp agrees with ValidateID.
	for _, k := range c.RoomKinds {
		name := strings.NewReplacer("<id>", "x1", "<a>", "a1", "<b>", "b1").Replace(k.Pattern)
		r, err := proto.ParseRoom(name)
		require.NoError(t, err, k.Pattern)
		require.Equal(t, k.Kind, r.Kind().String())
		require.Equal(t, name, r.Name())
		require.Equal(t, k.Stored, r.Kind().Stored())
	}
	re := regexp.MustCompile(c.ID.Regexp)
	for _, id := range []string{"u1", "A_b9", strings.Repeat("a", 64), strings.Repeat("a", 65), "", "a-b", "a.b", "*",
		"123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000"} {
		require.Equal(t, proto.ValidateID(id) == nil, re.MatchString(id), "id %q", id)
	}
}
