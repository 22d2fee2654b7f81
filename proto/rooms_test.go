package proto_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

const (
	uuidA = "0f8fad5b-d9cb-469f-a165-70867728950e"
	uuidB = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
)

func TestConstructors(t *testing.T) {
	s := proto.Subjects{}
	for _, tc := range []struct {
		build         func() (proto.Room, error)
		name, subject string
		kind          proto.RoomKind
	}{
		{func() (proto.Room, error) { return proto.UserRoom("u1") }, "user-u1", "rooms.user.u1", proto.KindUser},
		{func() (proto.Room, error) { return proto.OrgRoom("o1") }, "org-o1", "rooms.org.o1", proto.KindOrg},
		{func() (proto.Room, error) { return proto.BoardRoom("b1") }, "board-b1", "rooms.board.b1", proto.KindBoard},
		{func() (proto.Room, error) { return proto.BoardTasksRoom("b1") }, "board-b1-tasks", "rooms.board.b1.tasks", proto.KindBoardTasks},
		{func() (proto.Room, error) { return proto.BoardSprintsRoom("b1") }, "board-b1-sprints", "rooms.board.b1.sprints", proto.KindBoardSprints},
		{func() (proto.Room, error) { return proto.ChatRoom("b", "a") }, "chat-a-b", "rooms.chat.a.b", proto.KindChat},
		{func() (proto.Room, error) { return proto.ChatRoom("a", "b") }, "chat-a-b", "rooms.chat.a.b", proto.KindChat},
		{func() (proto.Room, error) { return proto.BoardTasksRoom(uuidA) }, "board-" + uuidA + "-tasks", "rooms.board." + uuidA + ".tasks", proto.KindBoardTasks},
		{func() (proto.Room, error) { return proto.ChatRoom(uuidB, uuidA) }, "chat-" + uuidA + "-" + uuidB, "rooms.chat." + uuidA + "." + uuidB, proto.KindChat},
	} {
		r, err := tc.build()
		require.NoError(t, err)
		require.Equal(t, tc.name, r.Name())
		require.Equal(t, tc.kind, r.Kind())
		require.Equal(t, tc.subject, s.Publish(r))
		if r.Kind().Stored() {
			require.Equal(t, "live."+tc.subject, s.Live(r))
		}
		back, err := s.RoomOf(s.Live(r))
		require.NoError(t, err, "live subject maps back")
		require.Equal(t, r, back)
		parsed, err := proto.ParseRoom(tc.name)
		require.NoError(t, err)
		require.Equal(t, r, parsed, "name round-trips")
	}
}

// TestClientRoomBelongsToItsUser: a client room's subject carries its user,
// so two users presenting the same clientId are two rooms (two subjects,
// two keys) under one name; a client room parsed from its name alone has
// no subject until it is given its owner.
func TestClientRoomBelongsToItsUser(t *testing.T) {
	s := proto.Subjects{}
	alice, err := proto.ClientRoom("alice", "tab_1")
	require.NoError(t, err)
	bob, err := proto.ClientRoom("bob", "tab_1")
	require.NoError(t, err)
	require.Equal(t, "client-tab_1", alice.Name())
	require.Equal(t, alice.Name(), bob.Name(), "the tab sees the same name")
	require.Equal(t, "alice", alice.Owner())
	require.Equal(t, "live.rooms.client.alice.tab_1", s.Publish(alice))
	require.Equal(t, "live.rooms.client.alice.tab_1", s.Live(alice))
	require.NotEqual(t, s.Live(alice), s.Live(bob))
	require.NotEqual(t, alice.Key(), bob.Key())
	back, err := s.RoomOf("live.rooms.client.bob.tab_1")
	require.NoError(t, err)
	require.Equal(t, bob, back)
	for _, bad := range []string{"live.rooms.client.tab_1", "live.rooms.client.*.tab_1", "live.rooms.client.bob.*", "live.rooms.client.a.b.c"} {
		_, err := s.RoomOf(bad)
		require.Error(t, err, bad)
	}

	parsed, err := proto.ParseRoom("client-tab_1")
	require.NoError(t, err)
	require.Empty(t, parsed.Owner())
	require.Equal(t, parsed.Name(), parsed.Key())
	require.Panics(t, func() { s.Live(parsed) }, "no subject without the user: it would reach every user's tab")
	owned, err := parsed.WithOwner("alice")
	require.NoError(t, err)
	require.Equal(t, alice, owned)
	_, err = parsed.WithOwner("a.b")
	require.Error(t, err)
	_, err = proto.ClientRoom("*", "tab_1")
	require.Error(t, err)
	board, _ := proto.BoardRoom("b1")
	_, err = board.WithOwner("alice")
	require.Error(t, err)
	require.Equal(t, board.Name(), board.Key())
}

func TestParseRoomRefuses(t *testing.T) {
	for _, name := range []string{
		"", "board", "board-", "board-*", "board->", "board-a.b", "board-a b", "board-a\tb",
		"board-b1-", "board-b1-tasks-tasks", "board-b1-other", "board-x-y-tasks",
		"user-", "user-*", "user-a.b", "client-", "org-", "org-é", "org-ａ", "user-a\u200bb",
		"chat-a-a", "chat-a", "chat-a-", "chat--a", "chat-a-b-c", "chat-*-a", "chat-a.b-c",
		"room-a", "Board-b1", "board-" + strings.Repeat("x", 65),
		"chat-" + strings.Repeat("x", 64) + "-" + strings.Repeat("y", 65),
		strings.Repeat("board-", 100),
		"board-0F8FAD5B-D9CB-469F-A165-70867728950E", // not canonical: upper case
		"board-0f8fad5b-d9cb-469f-a165-70867728950",  // one short
		"user-u1\n", "user-u1\x00",
	} {
		_, err := proto.ParseRoom(name)
		require.Error(t, err, "%q must be refused", name)
		require.NotEmpty(t, err.Error())
	}
}

func TestParseRoomReasons(t *testing.T) {
	for name, reason := range map[string]string{
		"board-*":                          `"*"`,
		"chat-a-a":                         "same user",
		"":                                 "empty",
		"board-" + strings.Repeat("x", 65): "limit",
		"thing-x":                          "unknown kind",
	} {
		_, err := proto.ParseRoom(name)
		require.ErrorContains(t, err, reason, name)
	}
}

func TestIDBounds(t *testing.T) {
	require.NoError(t, proto.ValidateID(strings.Repeat("a", 64)))
	require.Error(t, proto.ValidateID(strings.Repeat("a", 65)))
	require.NoError(t, proto.ValidateID(uuidA))
	require.NoError(t, proto.ValidateID("A_z_0"))
}

func TestParentAndChildren(t *testing.T) {
	b, _ := proto.BoardRoom("b1")
	tasks, _ := proto.BoardTasksRoom("b1")
	sprints, _ := proto.BoardSprintsRoom("b1")
	require.Equal(t, b, tasks.Parent())
	require.Equal(t, b, sprints.Parent())
	require.Equal(t, b, b.Parent())
	require.Equal(t, []proto.Room{tasks, sprints}, b.Children())
	require.Nil(t, tasks.Children())
}

func TestHasMember(t *testing.T) {
	u, _ := proto.UserRoom("u1")
	c, _ := proto.ChatRoom("u2", "u1")
	b, _ := proto.BoardRoom("b1")
	require.True(t, u.HasMember("u1"))
	require.False(t, u.HasMember("u2"))
	require.True(t, c.HasMember("u1"))
	require.True(t, c.HasMember("u2"))
	require.False(t, c.HasMember("u3"))
	require.False(t, b.HasMember("u1"), "board membership is the authorizer's to decide")
	require.Equal(t, []string{"u1", "u2"}, c.Members())
}

// FuzzParseRoom proves that no accepted name yields a subject with a
// wildcard, an empty token, a dot inside an id, or whitespace, and that
// accepted names round-trip through their subjects.
func FuzzParseRoom(f *testing.F) {
	for _, s := range []string{"user-u1", "board-b1-tasks", "chat-a-b", "chat-" + uuidA + "-" + uuidB,
		"board-*", "board-a.b", "org->", "client-x", "board-" + uuidA + "-sprints", "chat-b-a"} {
		f.Add(s)
	}
	subjects := proto.Subjects{}
	f.Fuzz(func(t *testing.T, name string) {
		parsed, err := proto.ParseRoom(name)
		if err != nil {
			return
		}
		r := parsed
		if r.Kind() == proto.KindClient {
			// Its subject needs its user: without one there is none.
			func() {
				defer func() {
					if recover() == nil {
						t.Fatalf("client room %q without its user has a subject", name)
					}
				}()
				_ = subjects.Live(r)
			}()
			if r, err = r.WithOwner("u1"); err != nil {
				t.Fatal(err)
			}
		}
		for _, subj := range []string{subjects.Publish(r), subjects.Live(r)} {
			toks := strings.Split(subj, ".")
			for _, tok := range toks {
				if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
					t.Fatalf("room %q gives subject %q with a bad token %q", name, subj, tok)
				}
			}
			want := 3 // rooms.kind.id
			switch r.Kind() {
			case proto.KindBoardTasks, proto.KindBoardSprints, proto.KindChat, proto.KindClient:
				want = 4 // rooms.board.B.tasks, rooms.chat.A.B, rooms.client.U.C
			}
			if subj == subjects.Live(r) {
				want++
			}
			if len(toks) != want {
				t.Fatalf("room %q gives subject %q: %d tokens, want %d (a dot inside an id?)", name, subj, len(toks), want)
			}
			back, err := subjects.RoomOf(subj)
			if err != nil || back != r {
				t.Fatalf("subject %q of %q maps back to %v, %v", subj, name, back, err)
			}
		}
		again, err := proto.ParseRoom(r.Name())
		if err != nil || again != parsed {
			t.Fatalf("canonical name %q of %q does not round-trip: %v", r.Name(), name, err)
		}
	})
}
