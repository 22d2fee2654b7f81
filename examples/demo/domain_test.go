package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
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

func envelope(t *testing.T, event proto.Event, id string, at int64, fields string) proto.Envelope {
	t.Helper()
	env := proto.Envelope{Event: event, ID: id, UpdatedAt: at}
	switch event.Op() {
	case proto.OpCreate:
		env.Data = json.RawMessage(fields)
	case proto.OpUpdate:
		env.Diff = json.RawMessage(fields)
	}
	return env
}

// TestApplyEvent: the newest updatedAt wins; a diff merges into the task; a
// delete is remembered, so an older create or update arriving later does
// not bring the task back; a task without a known column starts in to do.
func TestApplyEvent(t *testing.T) {
	r := newResources[Task]()
	require.True(t, applyEvent(r, envelope(t, proto.EventCreateTask, "t1", 10, `{"title":"A"}`)))
	require.Equal(t, Task{ID: "t1", Title: "A", Status: "todo", UpdatedAt: 10}, r.items["t1"])
	require.True(t, applyEvent(r, envelope(t, proto.EventUpdateTask, "t1", 20, `{"status":"doing","id":"x","updatedAt":1}`)))
	require.Equal(t, Task{ID: "t1", Title: "A", Status: "doing", UpdatedAt: 20}, r.items["t1"])
	require.False(t, applyEvent(r, envelope(t, proto.EventUpdateTask, "t1", 20, `{"status":"done"}`)), "already has it")
	require.False(t, applyEvent(r, envelope(t, proto.EventUpdateTask, "t1", 15, `{"status":"done"}`)), "older")
	require.True(t, applyEvent(r, envelope(t, proto.EventUpdateTask, "t1", 25, `{"status":"sideways"}`)))
	require.Equal(t, "todo", r.items["t1"].Status, "no such column: to do")
	require.False(t, applyEvent(r, envelope(t, proto.EventUpdateTask, "t9", 30, `{"title":"B"}`)), "nothing to patch")
	require.False(t, applyEvent(r, envelope(t, proto.EventCreateTask, "t2", 30, `[1]`)), "data that is no task")

	require.True(t, applyEvent(r, envelope(t, proto.EventDeleteTask, "t1", 40, "")))
	require.NotContains(t, r.items, "t1")
	require.False(t, applyEvent(r, envelope(t, proto.EventCreateTask, "t1", 35, `{"title":"A"}`)), "created before the delete")
	require.False(t, applyEvent(r, envelope(t, proto.EventUpdateTask, "t1", 39, `{"title":"A"}`)))
	require.True(t, applyEvent(r, envelope(t, proto.EventCreateTask, "t1", 41, `{"title":"Again","status":"done"}`)), "created again after it")
	require.Equal(t, "done", r.items["t1"].Status)
}

// TestDomainConsumesTheStream: a task another publisher (roomcast publish)
// stores in the board's room is in the demo's store, and so are its
// updates and its delete; the demo's own changes are applied once; events
// of other rooms are not its.
func TestDomainConsumesTheStream(t *testing.T) {
	_, _, js := natstest.RunStack(t, proto.StoreConfig{})
	pub := proto.NewPublisher(js, proto.Subjects{})
	d := newDomain(config{board: "demo", users: []string{"alice"}, secret: "s"}, pub, zeroLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.consume(ctx, js, proto.Subjects{}) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	own, err := d.createTask(ctx, "demo", "Ours", "doing")
	require.NoError(t, err)
	tasks, _ := proto.BoardTasksRoom("demo")
	other, _ := proto.BoardTasksRoom("other")
	now := time.Now().UnixMilli()
	for _, p := range []struct {
		room proto.Room
		env  proto.Envelope
	}{
		{tasks, envelope(t, proto.EventCreateTask, "t-cli", now, `{"title":"From the terminal"}`)},
		{other, envelope(t, proto.EventCreateTask, "t-other", now, `{"title":"Not ours"}`)},
		{tasks, envelope(t, proto.EventUpdateTask, "t-cli", now+1, `{"status":"done"}`)},
	} {
		_, err := pub.Publish(ctx, p.room, p.env)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		got := d.listTasks("demo", []string{"t-cli"})
		return len(got) == 1 && got[0].Status == "done"
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, []Task{own}, d.listTasks("demo", []string{own.ID}), "its own change applied once, as made")
	require.Empty(t, d.listTasks("other", nil), "another board's room is not consumed")

	_, err = pub.Publish(ctx, tasks, envelope(t, proto.EventDeleteTask, "t-cli", now+2, ""))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(d.listTasks("demo", []string{"t-cli"})) == 0 }, 10*time.Second, 10*time.Millisecond)
	moved, err := d.updateTask(ctx, "demo", own.ID, taskPatch{Status: ptr("done")})
	require.NoError(t, err)
	require.Greater(t, moved.UpdatedAt, now+2, "the API's next change sorts after what it consumed")
	_, err = d.updateTask(ctx, "demo", own.ID, taskPatch{Status: ptr("sideways")})
	require.ErrorIs(t, err, errBadStatus)
}

func ptr[T any](v T) *T { return &v }
