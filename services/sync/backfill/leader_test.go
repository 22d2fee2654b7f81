package backfill

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

// TestReplicatedStream runs the service against stream ROOMS at 3 replicas
// on a 3-node cluster: reads the index answers use direct gets settled with
// the leader (index), the others a consumer; never the unchecked walk of a
// follower (direct). The answers are the same as ever.
func TestReplicatedStream(t *testing.T) {
	servers := natstest.RunCluster(t, 3)
	nc := natstest.Connect(t, servers[0])
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	store := proto.StoreConfig{Replicas: 3}
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return proto.Ensure(ctx, js, store) == nil
	}, 20*time.Second, 100*time.Millisecond)

	reg := prometheus.NewRegistry()
	// The service talks to another node than the publisher.
	cfg := Config{NATSURL: servers[1].ClientURL(), Store: store, Registry: reg, Logger: zerolog.New(io.Discard)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	f := &fixture{nc: nc, js: js, pub: proto.NewPublisher(js, store.Subjects), reg: reg, cfg: cfg}
	require.Eventually(t, func() bool {
		var res proto.ChangesResult
		return f.request(proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-ready-tasks", Cursor: cursorAfter(0)}, &res) == nil
	}, 10*time.Second, 20*time.Millisecond)

	tasks := room(t, "board-b1-tasks")
	now := time.Now().UnixMilli()
	var seqs []uint64
	for i := range 5 {
		seqs = append(seqs, f.publish(t, tasks, create(fmt.Sprintf("t%d", i), now+int64(i))))
	}
	before := f.reads(t, readIndex)
	var res proto.ChangesResult
	require.Eventually(t, func() bool {
		res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(seqs[1])})
		return f.reads(t, readIndex) > before
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"t2", "t3", "t4"}, ids(res.Changes))
	require.True(t, res.Complete)

	// Newer than the index may know yet: the leader is asked.
	last := f.publish(t, tasks, update("t0", now+10, `{"a":1}`))
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(seqs[3])})
	require.Equal(t, []string{"t4", "t0"}, ids(res.Changes))
	require.Equal(t, last, res.Changes[1].Seq)

	// Pages through the index and the leader.
	var got []string
	cur := cursorAfter(0)
	for page := 0; ; page++ {
		require.Less(t, page, 10)
		r := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cur, Limit: 2})
		got = append(got, ids(r.Changes)...)
		if r.Next == nil {
			break
		}
		cur = *r.Next
	}
	require.Equal(t, []string{"t0", "t1", "t2", "t3", "t4", "t0"}, got) // t0 again: its latest change is newer

	// A room the index does not know: a consumer.
	consumers := f.reads(t, readConsumer)
	res = f.changes(t, proto.ChangesArgs{RoomName: "board-b9-tasks", Cursor: cursorAfter(0)})
	require.Empty(t, res.Changes)
	require.Equal(t, consumers+1, f.reads(t, readConsumer))
	require.Zero(t, metricValue(t, reg, "roomcast_sync_reads_total", map[string]string{"method": readDirect}), "no unchecked walk on a follower")
}

// TestIndexCheckedRepliesOutOfOrder: on a replicated stream the direct gets
// of one window are shared among the replicas (the client's server answers
// them only while its own replica is caught up; else each goes to one of
// the others, chosen per request), so a later request's reply may come
// before an earlier one's. TestFailover's clients were refused "no
// progress (gap)" for seconds after a node stopped: the read took the
// early reply for a lost one and stopped before visiting anything. Here a
// relay in front of the server's direct gets answers the first two
// requests of a read the other way round, as two replicas may; the read,
// on a page's budget (pageReads plus one), visits the page in stream
// order. A reply to a request already answered, or more replies than a
// request asks for, is still a gap; a reply that does not come (nothing
// at all for replyLate) is asked of the leader, long before the read's time
// is up, and dropped if it comes after all.
func TestIndexCheckedRepliesOutOfOrder(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, nil)
	tasks := room(t, "board-order-tasks")
	subject := f.cfg.Store.Subjects.Publish(tasks)
	ctx := context.Background()
	msgs := f.publishCreates(t, tasks, 6)
	x := newIndex(16, 16, 0, 0)
	observeAll(x, subject, msgs)

	// A relay answers each request with the server's answer; how it
	// orders them is the case's (n counts the requests it got). Each read
	// has a relay of its own: a read that stopped leaves requests behind.
	relayed := func(reorder func(n int, answer *nats.Msg, held **nats.Msg) []*nats.Msg) string {
		n, held := 0, (*nats.Msg)(nil)
		sub, err := f.nc.Subscribe(f.nc.NewInbox(), func(m *nats.Msg) {
			answer, err := f.nc.Request(proto.DirectGetSubject(proto.StreamRooms), m.Data, 5*time.Second)
			if err != nil {
				return // the read sees the lost reply
			}
			// Callbacks run one at a time.
			out := reorder(n, &nats.Msg{Subject: m.Reply, Data: answer.Data}, &held)
			n++
			for _, a := range out {
				_ = f.nc.Publish(a.Subject, a.Data) // no_hdr answers of found messages: no headers
			}
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		return sub.Subject
	}

	// "first answered after the leader was asked": every answer waits
	// until the read asks the leader (seen by watching the leader's API).
	var (
		laterMu sync.Mutex
		later   []*nats.Msg
		asked   bool
	)
	untilAsked := func(n int, answer *nats.Msg, _ **nats.Msg) []*nats.Msg {
		laterMu.Lock()
		defer laterMu.Unlock()
		if n == 0 {
			sub, err := f.nc.Subscribe(proto.MsgGetSubject(proto.StreamRooms), func(*nats.Msg) {
				laterMu.Lock()
				defer laterMu.Unlock()
				if !asked {
					asked = true
					for _, a := range later {
						_ = f.nc.Publish(a.Subject, a.Data)
					}
				}
			})
			require.NoError(t, err)
			t.Cleanup(func() { _ = sub.Unsubscribe() })
		}
		if asked {
			return []*nats.Msg{answer}
		}
		later = append(later, answer)
		return nil
	}

	leader := newLeaderGetter(f.nc, proto.StreamRooms)
	const limit = 4
	for _, c := range []struct {
		name    string
		reorder func(n int, answer *nats.Msg, held **nats.Msg) []*nats.Msg
		want    []*jetstream.RawStreamMsg
		cut     cut
	}{
		{"second answered first", func(n int, answer *nats.Msg, held **nats.Msg) []*nats.Msg {
			switch n {
			case 0:
				*held = answer
				return nil
			case 1:
				return []*nats.Msg{answer, *held}
			}
			return []*nats.Msg{answer}
		}, msgs[:pageReads(limit)], cutLimit},
		{"first answered twice", func(n int, answer *nats.Msg, held **nats.Msg) []*nats.Msg {
			if n == 0 {
				return []*nats.Msg{answer, answer}
			}
			return []*nats.Msg{answer}
		}, msgs[:1], cutGap},
		{"second answered twice, first", func(n int, answer *nats.Msg, held **nats.Msg) []*nats.Msg {
			switch n {
			case 0:
				*held = answer
				return nil
			case 1:
				return []*nats.Msg{answer, answer, *held}
			}
			return []*nats.Msg{answer}
		}, msgs[:1], cutGap},
		{"first never answered", func(n int, answer *nats.Msg, held **nats.Msg) []*nats.Msg {
			if n == 0 {
				return nil
			}
			return []*nats.Msg{answer}
		}, msgs[:pageReads(limit)], cutLimit},
		{"first answered after the leader was asked", untilAsked, msgs[:pageReads(limit)], cutLimit},
	} {
		rd := indexReader{index: x, walk: walkReader{nc: f.nc, subject: relayed(c.reorder)}, leader: &leader}
		rq := readRequest{subject: subject, start: start{afterSeq: msgs[0].Sequence - 1}, want: pageReads(limit),
			budget: budget{maxScan: pageReads(limit) + 1, maxBytes: 1 << 20, deadline: time.Now().Add(10 * time.Second)}}
		var got []uint64
		began := time.Now()
		res, ok, err := rd.read(ctx, rq, func(m stored) bool {
			if len(got) == pageReads(limit) {
				return false
			}
			got = append(got, m.Seq)
			return true
		})
		require.Less(t, time.Since(began), 5*time.Second, "%s: a lost reply is not waited for the read's whole time", c.name)
		require.NoError(t, err, c.name)
		require.True(t, ok, c.name)
		var want []uint64
		for _, m := range c.want {
			want = append(want, m.Sequence)
		}
		require.Equal(t, want, got, c.name)
		require.Equal(t, c.cut, res.cut, c.name)
	}
}

// publishCreates publishes n creates (t0, t1, …) to r and returns them as
// the stream stored them.
func (f *fixture) publishCreates(t *testing.T, r proto.Room, n int) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	stream, err := f.js.Stream(ctx, proto.StreamRooms)
	require.NoError(t, err)
	now := time.Now().UnixMilli()
	msgs := make([]*jetstream.RawStreamMsg, 0, n)
	for i := range n {
		seq := f.publish(t, r, create(fmt.Sprintf("t%d", i), now))
		m, err := stream.GetMsg(ctx, seq)
		require.NoError(t, err)
		msgs = append(msgs, m)
	}
	return msgs
}

// observeAll shows x msgs, the room's messages at subject in stream order,
// as the RePublish feed would.
func observeAll(x *index, subject string, msgs []*jetstream.RawStreamMsg) {
	for i, m := range msgs {
		prev := uint64(0)
		if i > 0 {
			prev = msgs[i-1].Sequence
		}
		h := nats.Header{}
		h.Set(jetstream.SubjectHeader, subject)
		h.Set(jetstream.SequenceHeader, strconv.FormatUint(m.Sequence, 10))
		h.Set(jetstream.LastSequenceHeader, strconv.FormatUint(prev, 10))
		h.Set(jetstream.TimeStampHeaer, m.Time.Format(time.RFC3339Nano))
		x.observe(h, m.Data)
	}
}

// TestLeaderAskedAgain: while a replicated stream has no leader (seconds
// after its leader's server stopped) the API drops a get, and one request
// waited the read's whole time, the gateway's own wait, even when a leader
// was elected meanwhile. A relay in front of the leader's API drops the
// first request, as a leaderless stream does: the get asks again and has
// the message long before its time is up.
func TestLeaderAskedAgain(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, nil)
	tasks := room(t, "board-again-tasks")
	seq := f.publish(t, tasks, create("t0", time.Now().UnixMilli()))
	var (
		mu      sync.Mutex
		asked   int
		dropAll bool
	)
	sub, err := f.nc.Subscribe(f.nc.NewInbox(), func(m *nats.Msg) {
		mu.Lock()
		asked++
		drop := asked == 1 || dropAll
		mu.Unlock()
		if drop {
			return // no leader (yet)
		}
		answer, err := f.nc.Request(proto.MsgGetSubject(proto.StreamRooms), m.Data, 5*time.Second)
		if err == nil {
			_ = f.nc.Publish(m.Reply, answer.Data)
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	l := leaderGetter{nc: f.nc, subject: sub.Subject}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	m, subj, found, err := l.get(ctx, seq, "")
	require.NoError(t, err)
	require.Less(t, time.Since(began), 2*time.Second, "asked again, not waited out")
	require.True(t, found)
	require.Equal(t, seq, m.Seq)
	require.Equal(t, f.cfg.Store.Subjects.Publish(tasks), subj)
	mu.Lock()
	require.Equal(t, 2, asked)
	mu.Unlock()

	// Asked until its time is up: an error, not a wait past it.
	mu.Lock()
	asked, dropAll = 0, true
	mu.Unlock()
	short, cancel2 := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel2()
	_, _, _, err = l.get(short, seq, "")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	mu.Lock()
	require.Greater(t, asked, 1, "asked again while its time lasted")
	mu.Unlock()
}

// TestStreamInfoAskedAgain: the stream info a read takes for its
// completeness check is the leader's answer too, and while the stream had
// no leader the request waited the handler's whole time (7 s: TestFailover's
// clients were refused "no answer in time" after a node stopped). A relay in
// front of the JetStream API drops the first request: the info is asked
// again and comes long before that; a relay that drops every request ends
// the asking at the read's deadline.
func TestStreamInfoAskedAgain(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, nil)
	var (
		mu      sync.Mutex
		asked   int
		dropAll bool
	)
	prefix := f.nc.NewInbox() + "."
	sub, err := f.nc.Subscribe(prefix+">", func(m *nats.Msg) {
		mu.Lock()
		asked++
		drop := asked == 1 || dropAll
		mu.Unlock()
		if drop {
			return // no leader (yet)
		}
		answer, err := f.nc.Request(jetstream.DefaultAPIPrefix+strings.TrimPrefix(m.Subject, prefix), m.Data, 5*time.Second)
		if err == nil {
			_ = f.nc.Publish(m.Reply, answer.Data)
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	js, err := jetstream.NewWithAPIPrefix(f.nc, prefix)
	require.NoError(t, err)
	s := &service{js: js}

	began := time.Now()
	stream, err := s.streamInfo(context.Background(), time.Now().Add(5*time.Second))
	require.NoError(t, err)
	require.Less(t, time.Since(began), 2*time.Second, "asked again, not waited out")
	require.Equal(t, proto.StreamRooms, stream.CachedInfo().Config.Name)
	mu.Lock()
	require.Equal(t, 2, asked)
	asked, dropAll = 0, true
	mu.Unlock()

	began = time.Now()
	_, err = s.streamInfo(context.Background(), time.Now().Add(600*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(began), 2*time.Second, "asking ends at the deadline")
	mu.Lock()
	require.Greater(t, asked, 1, "asked again while its time lasted")
	mu.Unlock()
}
