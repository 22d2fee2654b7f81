package main

import (
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

func zeroLogger() zerolog.Logger { return zerolog.Nop() }

// The demo's authorizer: demo users on the demo board, their own user
// room and chats among themselves; nothing else.
func TestDemoAuthz(t *testing.T) {
	d := newDomain(config{board: "demo", users: []string{"alice", "bob"}, secret: "s"}, nil, zeroLogger())
	for room, want := range map[string]bool{
		"board-demo": true, "board-demo-tasks": true, "board-demo-sprints": true,
		"board-other": false, "org-demo": false, "user-alice": true, "user-bob": false,
		"chat-alice-bob": true, "chat-bob-alice": true, "chat-alice-mallory": false,
		"client-x": false, "board-*": false,
	} {
		require.Equal(t, want, d.allow("alice", room), room)
	}
	require.False(t, d.allow("mallory", "board-demo"), "not a demo user")
}

func TestDemoTokensAndClock(t *testing.T) {
	d := newDomain(config{board: "demo", users: []string{"alice"}, secret: "s"}, nil, zeroLogger())
	tok, exp, err := d.token.mint("alice")
	require.NoError(t, err)
	require.Positive(t, exp)
	require.Contains(t, tok, ".")
	a, b := d.now(), d.now()
	require.Greater(t, b, a, "updatedAt never ties")
}
