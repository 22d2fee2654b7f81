package natstest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

// TestRequestNoResponders: a subject nobody serves is an unavailable
// *Error that also says no service is there (errors.Is ErrNoResponders);
// a silent service is unavailable without it.
func TestRequestNoResponders(t *testing.T) {
	_, nc, _ := natstest.RunStack(t, proto.StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := proto.Request(ctx, nc, "nobody.here", struct{}{}, nil)
	require.ErrorIs(t, err, nats.ErrNoResponders)
	require.Equal(t, proto.CodeUnavailable, proto.CodeOf(err))
	require.Equal(t, "unavailable: nobody.here: no service is answering", err.Error())
	require.Equal(t, "nobody.here: no service is answering", proto.Fail(err).Error.Message)

	sub, err := nc.Subscribe("silent", func(*nats.Msg) {})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	err = proto.Request(short, nc, "silent", struct{}{}, nil)
	require.Equal(t, proto.CodeUnavailable, proto.CodeOf(err))
	require.False(t, errors.Is(err, nats.ErrNoResponders))
}
