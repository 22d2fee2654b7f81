package proto_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func TestSubjectsPrefix(t *testing.T) {
	s, err := proto.NewSubjects("acme.rooms")
	require.NoError(t, err)
	b, _ := proto.BoardTasksRoom("b1")
	require.Equal(t, "acme.rooms.board.b1.tasks", s.Publish(b))
	require.Equal(t, "live.acme.rooms.board.b1.tasks", s.Live(b))
	require.Equal(t, []string{"acme.rooms.user.>", "acme.rooms.org.>", "acme.rooms.board.>", "acme.rooms.chat.>"}, s.StreamSubjects())
	require.Equal(t, [2]string{"live.acme.rooms.chat.u1.*", "live.acme.rooms.chat.*.u1"}, s.LiveChats("u1"))
	require.Equal(t, [2]string{"acme.rooms.chat.u1.*", "acme.rooms.chat.*.u1"}, s.StoredChats("u1"))
	require.Equal(t, "live.acme.rooms.>", s.LiveAll())
	back, err := s.RoomOf("acme.rooms.board.b1.tasks")
	require.NoError(t, err)
	require.Equal(t, b, back)
	_, err = s.RoomOf("rooms.board.b1.tasks")
	require.Error(t, err, "another prefix is not ours")

	def, err := proto.NewSubjects("")
	require.NoError(t, err)
	require.Equal(t, "rooms", def.Prefix())

	for _, bad := range []string{"a..b", ".a", "a.", "a b", "a.*", ">", "live", "live.rooms"} {
		_, err := proto.NewSubjects(bad)
		require.Error(t, err, bad)
	}
}

func TestRoomOfRefuses(t *testing.T) {
	s := proto.Subjects{}
	for _, subj := range []string{
		"rooms", "rooms.board", "rooms.board.*", "rooms.board.>", "rooms.board.b1.other",
		"rooms.board.b1.tasks.x", "rooms.chat.b.a", "rooms.chat.a.a", "rooms.chat.a",
		"rooms.thing.x", "other.board.b1", "live.rooms.user.*", "rooms.user.a b",
	} {
		_, err := s.RoomOf(subj)
		require.Error(t, err, subj)
	}
}

func TestRevokeSubject(t *testing.T) {
	require.Equal(t, "ctl.users.u1.revoke", proto.RevokeSubject("u1"))
	require.Equal(t, "u1", proto.UserOfRevokeSubject("ctl.users.u1.revoke"))
	require.Equal(t, "", proto.UserOfRevokeSubject("ctl.users.*.revoke"))
	require.Equal(t, "", proto.UserOfRevokeSubject("ctl.users.u1.other"))
}

// TestLivePersonalCoversPersonalRoomsOnly: every user, client and chat room's
// live subject matches one of the three personal wildcards, and no org or
// board room's does (a gateway serving personal rooms from them must not get
// the boards' traffic).
func TestLivePersonalCoversPersonalRoomsOnly(t *testing.T) {
	s, err := proto.NewSubjects("acme.rooms")
	require.NoError(t, err)
	wild := s.LivePersonal()
	require.Equal(t, [3]string{"live.acme.rooms.user.*", "live.acme.rooms.client.*.*", "live.acme.rooms.chat.*.*"}, wild)
	matches := func(subject string) int {
		n := 0
		for _, w := range wild {
			if subjectMatches(w, subject) {
				n++
			}
		}
		return n
	}
	user, _ := proto.UserRoom("u1")
	client, _ := proto.ClientRoom("u1", "c1")
	chat, _ := proto.ChatRoom("u2", "u1")
	for _, r := range []proto.Room{user, client, chat} {
		require.Equal(t, 1, matches(s.Live(r)), r.Name())
	}
	org, _ := proto.OrgRoom("o1")
	board, _ := proto.BoardRoom("b1")
	for _, r := range append([]proto.Room{org, board}, board.Children()...) {
		require.Zero(t, matches(s.Live(r)), r.Name())
	}
}

// subjectMatches is NATS subject matching of a literal subject against a
// pattern with * (one token) and > (the rest).
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}
