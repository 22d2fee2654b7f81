package backfill

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func TestParseQueryClampsLimit(t *testing.T) {
	s := &service{cfg: Config{}.withDefaults()}
	q, err := s.parseQuery([]byte(`{"roomName":"board-b1-tasks","afterSeq":3}`), false)
	require.NoError(t, err)
	require.Equal(t, DefaultLimit, q.limit)
	require.Nil(t, q.since)
	require.Equal(t, start{afterSeq: 3}, q.start)
	q, err = s.parseQuery([]byte(`{"roomName":"chat-b-a","since":5,"limit":100000}`), true)
	require.NoError(t, err)
	require.Equal(t, DefaultMaxLimit, q.limit)
	require.Equal(t, "chat-a-b", q.room.Name())
	require.Equal(t, int64(5), *q.since)

	// sync alone bounds the limit (the gateway passes any on): to its
	// configured maximum, above the default one or below.
	for _, maxLimit := range []int{5, 5000} {
		s := &service{cfg: Config{MaxLimit: maxLimit}.withDefaults()}
		q, err = s.parseQuery([]byte(`{"roomName":"board-b1-tasks","afterSeq":3,"limit":3000}`), false)
		require.NoError(t, err)
		require.Equal(t, min(maxLimit, 3000), q.limit)
	}
	_, err = s.parseQuery([]byte(`{"roomName":"board-b1-tasks","afterSeq":3,"limit":-1}`), false)
	require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err))
}

func FuzzParseQuery(f *testing.F) {
	f.Add([]byte(`{"roomName":"board-b1-tasks","afterSeq":3}`), false)
	f.Add([]byte(`{"roomName":"chat-a-b","since":5,"limit":10}`), true)
	f.Add([]byte(`{"roomName":"board-*-tasks","since":5}`), false)
	s := &service{cfg: Config{}.withDefaults()}
	f.Fuzz(func(t *testing.T, b []byte, chat bool) {
		q, err := s.parseQuery(b, chat)
		if err != nil {
			require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err), "%v", err)
			return
		}
		require.Equal(t, chat, q.room.Kind() == proto.KindChat)
		require.True(t, q.room.Kind().Stored())
		require.True(t, q.limit >= 1 && q.limit <= DefaultMaxLimit)
		// The room's subject is a literal subject: no wildcard, no empty token.
		subj := proto.Subjects{}.Publish(q.room)
		_, err = proto.Subjects{}.RoomOf(subj)
		require.NoError(t, err)
	})
}
