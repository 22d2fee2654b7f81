package proto_test

import (
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
