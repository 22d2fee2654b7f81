package backfill

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

// feedMsg is the headers of one re-published message: seq stored on
// subject at second ts, after prev on the same subject.
func feedMsg(subject string, seq, prev uint64, ts int) nats.Header {
	h := nats.Header{}
	h.Set(jetstream.SubjectHeader, subject)
	h.Set(jetstream.SequenceHeader, strconv.FormatUint(seq, 10))
	h.Set(jetstream.LastSequenceHeader, strconv.FormatUint(prev, 10))
	h.Set(jetstream.TimeStampHeaer, time.Unix(int64(ts), 0).UTC().Format(time.RFC3339Nano))
	return h
}

func TestIndexLookup(t *testing.T) {
	x := newIndex(4, 2, 0, 0)
	at := func(sec int) start { return start{byTime: true, at: time.Unix(int64(sec), 0)} }
	after := func(n uint64) start { return start{afterSeq: n} }
	check := func(subject string, st start, want []uint64, wantTail uint64) {
		t.Helper()
		known, ok := x.lookup(subject, st)
		require.True(t, ok)
		var seqs []uint64
		for _, e := range known.entries {
			seqs = append(seqs, e.seq)
		}
		require.Equal(t, want, seqs)
		require.Equal(t, wantTail, known.tail)
	}
	cannot := func(subject string, st start) {
		t.Helper()
		_, ok := x.lookup(subject, st)
		require.False(t, ok)
	}

	cannot("a", after(0))
	// The room's first messages: the chain reaches its beginning.
	x.observe(feedMsg("a", 3, 0, 10), nil)
	x.observe(feedMsg("a", 5, 3, 11), nil)
	check("a", after(0), []uint64{3, 5}, 5)
	check("a", after(3), []uint64{5}, 5)
	check("a", after(4), []uint64{5}, 5)
	check("a", after(5), nil, 5)
	check("a", after(9), nil, 5) // newer than the index: the server is asked from 5
	check("a", start{byTime: true}, []uint64{3, 5}, 5)
	check("a", at(11), []uint64{5}, 5)
	check("a", at(1), []uint64{3, 5}, 5)
	x.observe(feedMsg("a", 5, 3, 11), nil) // a duplicate changes nothing
	check("a", after(0), []uint64{3, 5}, 5)

	// The ring keeps the latest 4: base moves up.
	x.observe(feedMsg("a", 8, 5, 12), nil)
	x.observe(feedMsg("a", 9, 8, 13), nil)
	x.observe(feedMsg("a", 12, 9, 14), nil)
	check("a", after(3), []uint64{5, 8, 9, 12}, 12)
	cannot("a", after(2))
	cannot("a", start{byTime: true})
	cannot("a", at(11)) // message 3 (stored at 10) is gone: 5 may not be the first at 11
	check("a", at(12), []uint64{8, 9, 12}, 12)

	// A room first seen mid-history: its chain starts at its Last-Sequence.
	x.observe(feedMsg("b", 20, 15, 20), nil)
	check("b", after(15), []uint64{20}, 20)
	check("b", after(17), []uint64{20}, 20)
	cannot("b", after(14))
	cannot("b", at(1))
	check("b", at(21), nil, 20)

	// A message the feed dropped (21 after 18, not 20): the chain restarts.
	x.observe(feedMsg("b", 21, 18, 21), nil)
	cannot("b", after(15))
	check("b", after(18), []uint64{21}, 21)

	// Bounded in rooms: a third room evicts one of the two.
	x.observe(feedMsg("c", 30, 0, 30), nil)
	check("c", after(0), []uint64{30}, 30)
	require.Len(t, x.rooms, 2)

	// A publisher's own copies of the stream's headers come first; the
	// server's, appended, are the ones the index reads.
	forged := nats.Header{}
	forged.Set(jetstream.SubjectHeader, "a")
	forged.Set(jetstream.SequenceHeader, "99")
	forged.Set(jetstream.LastSequenceHeader, "12")
	forged.Set(jetstream.TimeStampHeaer, time.Unix(99, 0).UTC().Format(time.RFC3339Nano))
	for k, vs := range feedMsg("c", 40, 30, 40) {
		forged[k] = append(forged[k], vs...)
	}
	x.observe(forged, nil)
	check("c", after(0), []uint64{30, 40}, 40)

	// Headers that are missing or make no sense are ignored.
	x.observe(nats.Header{}, nil)
	x.observe(feedMsg("c", 41, 41, 41), nil)
	check("c", after(0), []uint64{30, 40}, 40)
}

// TestIndexedReadsOverNATS checks reads answered from the index (direct gets
// of known sequences, then the server for anything newer) give the answers of
// the walk: cursors, since, pagination, and messages newer than the index
// knows.
func TestIndexedReadsOverNATS(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.IndexDepth, c.TailMessages = 8, -1 })
	tasks, other := room(t, "board-b1-tasks"), room(t, "board-b2-tasks")
	now := time.Now().UnixMilli()
	var seqs []uint64
	for i := range 6 {
		seqs = append(seqs, f.publish(t, tasks, update(fmt.Sprintf("t%d", i%4), now+int64(i), `{"n":1}`)))
		f.publish(t, other, create(fmt.Sprintf("x%d", i), now))
	}
	// Wait until a request is answered from the index.
	before := f.reads(t, readIndex)
	require.Eventually(t, func() bool {
		f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(seqs[5])})
		return f.reads(t, readIndex) > before
	}, 5*time.Second, 10*time.Millisecond)
	before = f.reads(t, readIndex)

	res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0)})
	require.Equal(t, []string{"t2", "t3", "t0", "t1"}, ids(res.Changes))
	require.Equal(t, []uint64{seqs[2], seqs[3], seqs[4], seqs[5]}, []uint64{res.Changes[0].Seq, res.Changes[1].Seq, res.Changes[2].Seq, res.Changes[3].Seq})
	require.True(t, res.Complete)

	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(seqs[3])})
	require.Equal(t, []string{"t0", "t1"}, ids(res.Changes))

	// Pages: limit 1, following next, neither skip nor repeat.
	var got []string
	cur := cursorAfter(seqs[1])
	for page := 0; ; page++ {
		require.Less(t, page, 10)
		r := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cur, Limit: 1})
		got = append(got, ids(r.Changes)...)
		if r.Next == nil {
			break
		}
		cur = *r.Next
	}
	require.Equal(t, []string{"t2", "t3", "t0", "t1"}, got)

	// since: the store time is found in the index.
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorSince(now + 4)})
	require.Equal(t, []string{"t0", "t1"}, ids(res.Changes))

	// Chat: every message after the cursor, in order.
	chat := room(t, "chat-a-b")
	var chatSeqs []uint64
	for i := range 3 {
		chatSeqs = append(chatSeqs, f.publish(t, chat, message(fmt.Sprintf("m%d", i), now+int64(i))))
	}
	require.Eventually(t, func() bool {
		r := f.chat(t, proto.ChatArgs{RoomName: chat.Name(), Cursor: cursorAfter(chatSeqs[0])})
		return len(r.Messages) == 2
	}, 5*time.Second, 10*time.Millisecond)
	require.Greater(t, f.reads(t, readIndex), before)

	// More messages than the index holds (depth 8): a cursor before them is
	// answered by the walk, with the same result.
	for i := range 10 {
		seqs = append(seqs, f.publish(t, tasks, create(fmt.Sprintf("n%d", i), now+100)))
	}
	// Once the index has seen them (the answer is the same before: the
	// server is asked for what is newer than the index).
	want := []string{"t0", "t1", "n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"}
	args := proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(seqs[3])}
	require.Equal(t, want, ids(f.changes(t, args).Changes))
	walked := func() float64 {
		return metricValue(t, f.reg, "roomcast_sync_reads_total", map[string]string{"method": readDirect})
	}
	var last []string
	require.Eventually(t, func() bool {
		walks := walked()
		var r proto.ChangesResult
		if f.request(proto.SubjectSyncChanges, args, &r) != nil {
			return false
		}
		last = ids(r.Changes)
		return walked() > walks
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, want, last)
}

// TestIndexAfterStreamRecreated deletes and re-creates stream ROOMS: the
// index's sequences then name other rooms' messages. No answer may report
// them: the request that notices is unavailable (retry), later ones are
// right.
func TestIndexAfterStreamRecreated(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.TailMessages = -1 })
	a, b := room(t, "board-a-tasks"), room(t, "board-b-tasks")
	now := time.Now().UnixMilli()
	for i := range 3 {
		f.publish(t, a, create(fmt.Sprintf("a%d", i), now))
	}
	before := f.reads(t, readIndex)
	require.Eventually(t, func() bool {
		res := f.changes(t, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(0)})
		return len(res.Changes) == 3 && f.reads(t, readIndex) > before
	}, 5*time.Second, 10*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, f.js.DeleteStream(ctx, proto.StreamRooms))
	require.NoError(t, proto.Ensure(ctx, f.js, proto.StoreConfig{}))
	for i := range 3 {
		f.publish(t, b, create(fmt.Sprintf("b%d", i), now)) // the same sequences as a's
	}
	var res proto.ChangesResult
	err := f.request(proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(0)}, &res)
	if err != nil {
		require.Equal(t, proto.CodeUnavailable, proto.CodeOf(err))
		require.NoError(t, f.request(proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: a.Name(), Cursor: cursorAfter(0)}, &res))
	}
	require.Empty(t, res.Changes, "room a has no messages in the new stream")
	res = f.changes(t, proto.ChangesArgs{RoomName: b.Name(), Cursor: cursorAfter(0)})
	require.Equal(t, []string{"b0", "b1", "b2"}, ids(res.Changes))
}

// TestIndexLearntBeforeFirstRequest: what the index learns from the feed
// before the service's first request answers that request (the stream was
// there when the service started). It once reset the index on the first
// request, so a service whose first request came after a fill read every
// room by the server's walk.
func TestIndexLearntBeforeFirstRequest(t *testing.T) {
	s, nc, js := natstest.RunStack(t, proto.StoreConfig{})
	reg := prometheus.NewRegistry()
	cfg := Config{NATSURL: s.ClientURL(), Registry: reg, Logger: zerolog.New(io.Discard), TailMessages: -1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	f := &fixture{nc: nc, js: js, pub: proto.NewPublisher(js, proto.Subjects{}), reg: reg, cfg: cfg}
	// Up once micro answers a ping (the feed is subscribed before): no
	// sync request has been made.
	ping, err := micro.ControlSubject(micro.PingVerb, proto.ServiceSync, "")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := nc.Request(ping, nil, time.Second)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)

	tasks := room(t, "board-b1-tasks")
	now := time.Now().UnixMilli()
	for i := range 5 {
		f.publish(t, tasks, create(fmt.Sprintf("t%d", i), now))
	}
	// The service's first request is for another room (before the fix, it
	// reset the index); then tasks is answered from the index.
	f.changes(t, proto.ChangesArgs{RoomName: "board-other-tasks", Cursor: cursorAfter(0)})
	var res proto.ChangesResult
	require.Eventually(t, func() bool {
		res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0)})
		return f.reads(t, readIndex) > 0
	}, 5*time.Second, 10*time.Millisecond, "tasks is never read from the index")
	require.Equal(t, []string{"t0", "t1", "t2", "t3", "t4"}, ids(res.Changes))
}
