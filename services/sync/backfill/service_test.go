package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/process/natstest"
	"github.com/roomcast/roomcast/proto"
)

func cursorAfter(n uint64) proto.Cursor { return proto.Cursor{AfterSeq: &n} }
func cursorSince(ms int64) proto.Cursor { return proto.Cursor{Since: &ms} }

// fixture is a NATS server with the stream, a running sync service and a
// publisher, as a domain service would have.
type fixture struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	pub *proto.Publisher
	reg *prometheus.Registry
	cfg Config
}

func startSync(t testing.TB, store proto.StoreConfig, adjust func(*Config)) *fixture {
	t.Helper()
	s, nc, js := natstest.RunStack(t, store)
	reg := prometheus.NewRegistry()
	cfg := Config{NATSURL: s.ClientURL(), Store: store, Registry: reg, Logger: zerolog.New(io.Discard)}
	if adjust != nil {
		adjust(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	f := &fixture{nc: nc, js: js, pub: proto.NewPublisher(js, store.Subjects), reg: reg, cfg: cfg}
	// Ready once it answers (no responders until the endpoints exist).
	require.Eventually(t, func() bool {
		var res proto.ChangesResult
		err := f.request(proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-ready-tasks", Cursor: cursorAfter(0)}, &res)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	return f
}

func (f *fixture) request(subject string, args, res any) error {
	// Long enough for the benchmark's cold reads; tests answer in ms.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if b, ok := args.([]byte); ok {
		// Bytes that are not JSON, which proto.Request cannot send.
		m, err := f.nc.RequestWithContext(ctx, subject, b)
		if err != nil {
			return err
		}
		if e := proto.ReplyError(m); e != nil {
			return e
		}
		return json.Unmarshal(m.Data, res)
	}
	return proto.Request(ctx, f.nc, subject, args, res)
}

func (f *fixture) changes(t *testing.T, args proto.ChangesArgs) proto.ChangesResult {
	t.Helper()
	var res proto.ChangesResult
	require.NoError(t, f.request(proto.SubjectSyncChanges, args, &res))
	return res
}

// allChanges follows args's pages to the end, as a client does, and
// returns the changes they add up to (a resource's later change replacing
// its earlier one), in stream order, with the last page's completeness.
func (f *fixture) allChanges(t *testing.T, args proto.ChangesArgs) proto.ChangesResult {
	t.Helper()
	latest := map[string]proto.Change{}
	var res proto.ChangesResult
	for page := 0; ; page++ {
		require.Less(t, page, 100, "pages do not end")
		res = f.changes(t, args)
		for _, c := range res.Changes {
			latest[c.ID] = c
		}
		if res.Next == nil {
			break
		}
		args.Cursor = *res.Next
	}
	res.Changes = res.Changes[:0]
	for _, c := range latest {
		res.Changes = append(res.Changes, c)
	}
	sort.Slice(res.Changes, func(i, j int) bool { return res.Changes[i].Seq < res.Changes[j].Seq })
	return res
}

func (f *fixture) chat(t *testing.T, args proto.ChatArgs) proto.ChatResult {
	t.Helper()
	var res proto.ChatResult
	require.NoError(t, f.request(proto.SubjectSyncChat, args, &res))
	return res
}

func (f *fixture) publish(t *testing.T, room proto.Room, env proto.Envelope) uint64 {
	t.Helper()
	ack, err := f.pub.Publish(context.Background(), room, env)
	require.NoError(t, err)
	return ack.Sequence
}

func room(t testing.TB, name string) proto.Room {
	t.Helper()
	r, err := proto.ParseRoom(name)
	require.NoError(t, err)
	return r
}

func create(id string, at int64) proto.Envelope {
	return proto.Envelope{Event: proto.EventCreateTask, ID: id, UpdatedAt: at, Data: json.RawMessage(`{"id":"` + id + `","title":"t"}`)}
}

func update(id string, at int64, diff string) proto.Envelope {
	return proto.Envelope{Event: proto.EventUpdateTask, ID: id, UpdatedAt: at, Diff: json.RawMessage(diff)}
}

func remove(id string, at int64) proto.Envelope {
	return proto.Envelope{Event: proto.EventDeleteTask, ID: id, UpdatedAt: at}
}

func message(id string, at int64) proto.Envelope {
	return proto.Envelope{Event: proto.EventNewMessage, ID: id, UpdatedAt: at, Data: json.RawMessage(`{"text":"hi ` + id + `"}`)}
}

func TestChangesOverNATS(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, nil)
	tasks, other := room(t, "board-b1-tasks"), room(t, "board-b2-tasks")
	now := time.Now().UnixMilli()

	f.publish(t, tasks, create("t1", now))
	f.publish(t, other, create("x1", now))
	f.publish(t, tasks, create("t2", now+1))
	f.publish(t, tasks, update("t1", now+2, `{"title":"a"}`))
	mid := f.publish(t, tasks, remove("t2", now+3))
	f.publish(t, other, remove("x1", now+3))
	t1 := f.publish(t, tasks, update("t1", now+4, `{"title":"b"}`))
	t3 := f.publish(t, tasks, create("t3", now+5))
	t2 := f.publish(t, tasks, create("t2", now+6)) // re-created

	res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0)})
	require.True(t, res.Complete)
	require.Nil(t, res.Next)
	require.Equal(t, []proto.Change{
		{ID: "t1", UpdatedAt: now + 4, Seq: t1},
		{ID: "t3", UpdatedAt: now + 5, Seq: t3},
		{ID: "t2", UpdatedAt: now + 6, Seq: t2},
	}, res.Changes)

	// afterSeq is exact: only what came after mid.
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(mid)})
	require.Equal(t, []string{"t1", "t3", "t2"}, ids(res.Changes))
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(t1)})
	require.Equal(t, []string{"t3", "t2"}, ids(res.Changes))
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(t2)})
	require.Empty(t, res.Changes)
	require.NotNil(t, res.Changes, "an empty answer is [], not null")
	require.True(t, res.Complete)

	// since filters on updatedAt, ties kept; the delete of t2 is older than
	// since and its re-creation newer, so t2 is reported as it is now.
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorSince(now + 3)})
	require.Equal(t, []proto.Change{
		{ID: "t1", UpdatedAt: now + 4, Seq: t1},
		{ID: "t3", UpdatedAt: now + 5, Seq: t3},
		{ID: "t2", UpdatedAt: now + 6, Seq: t2},
	}, res.Changes)
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorSince(now + 6)})
	require.Equal(t, []string{"t2"}, ids(res.Changes))

	// A room never published to.
	res = f.changes(t, proto.ChangesArgs{RoomName: "board-none-sprints", Cursor: cursorSince(0)})
	require.Empty(t, res.Changes)
	require.True(t, res.Complete)

	// The other room's own history, with its delete.
	res = f.changes(t, proto.ChangesArgs{RoomName: other.Name(), Cursor: cursorAfter(0)})
	require.Len(t, res.Changes, 1)
	require.True(t, res.Changes[0].Deleted)
}

func ids(cs []proto.Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

// TestChangesScanOnlyTheRoom checks the cost claim through the service's own
// count of messages read: thousands of messages in other rooms, and in the
// room itself before the cursor, are never read.
func TestChangesScanOnlyTheRoom(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, nil)
	tasks := room(t, "board-b1-tasks")
	now := time.Now().UnixMilli()
	var last uint64
	for i := range 20 {
		last = f.publish(t, tasks, create(fmt.Sprintf("old%d", i), now))
	}
	// Other rooms' messages, published fast (as a busy system would).
	var futures []jetstream.PubAckFuture
	for i := range 3000 {
		r := room(t, fmt.Sprintf("board-b%d-tasks", 2+i%50))
		data, id, err := f.pub.Encode(r, create(fmt.Sprintf("x%d", i), now))
		require.NoError(t, err)
		msg := nats.NewMsg(f.cfg.Store.Subjects.Publish(r))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, id)
		fut, err := f.js.PublishMsgAsync(msg)
		require.NoError(t, err)
		futures = append(futures, fut)
	}
	for _, fut := range futures {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			require.NoError(t, err)
		}
	}
	for i := range 3 {
		f.publish(t, tasks, create(fmt.Sprintf("new%d", i), now+1))
	}
	before := testutil.ToFloat64(f.scanned(endpointChanges))
	res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(last)})
	require.Equal(t, []string{"new0", "new1", "new2"}, ids(res.Changes))
	require.Equal(t, 3.0, testutil.ToFloat64(f.scanned(endpointChanges))-before, "only the room's messages after the cursor are read")
}

func (f *fixture) scanned(endpoint string) prometheus.Counter {
	// Re-registering the same description returns the registered collector.
	m := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roomcast_sync_messages_scanned_total",
		Help: "Stream messages read to answer sync requests, by endpoint.",
	}, []string{"endpoint"})
	err := f.reg.Register(m)
	var dup prometheus.AlreadyRegisteredError
	if !asDup(err, &dup) {
		panic(fmt.Sprintf("scanned counter not registered: %v", err))
	}
	return dup.ExistingCollector.(*prometheus.CounterVec).WithLabelValues(endpoint)
}

func asDup(err error, dup *prometheus.AlreadyRegisteredError) bool {
	d, ok := err.(prometheus.AlreadyRegisteredError)
	if ok {
		*dup = d
	}
	return ok
}

// TestChangesPaginationOverNATS follows Next cursors, with pages cut by the
// limit and by MaxScan, and checks the pages add up to the single answer.
func TestChangesPaginationOverNATS(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.MaxScan = 4 })
	tasks := room(t, "board-b1-tasks")
	now := time.Now().UnixMilli()
	var want = map[string]proto.Change{}
	for i := range 25 {
		id := fmt.Sprintf("t%d", i%7)
		env := update(id, now+int64(i), `{"n":1}`)
		deleted := i%5 == 4
		if deleted {
			env = remove(id, now+int64(i))
		}
		seq := f.publish(t, tasks, env)
		want[id] = proto.Change{ID: id, UpdatedAt: now + int64(i), Deleted: deleted, Seq: seq}
	}
	for _, limit := range []int{1, 2, 3, 100} {
		got := map[string]proto.Change{}
		cur := cursorSince(now)
		pages := 0
		for {
			res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cur, Limit: limit})
			require.True(t, res.Complete)
			require.LessOrEqual(t, len(res.Changes), limit)
			for _, c := range res.Changes {
				if prev, ok := got[c.ID]; ok {
					require.Greater(t, c.Seq, prev.Seq, "a resource repeats only with a later change")
				}
				got[c.ID] = c
			}
			pages++
			require.Less(t, pages, 30)
			if res.Next == nil {
				break
			}
			require.NotNil(t, res.Next.AfterSeq)
			cur = *res.Next
		}
		require.Equal(t, want, got, "limit %d", limit)
		require.GreaterOrEqual(t, pages, 25/4, "MaxScan 4 cuts pages")
	}
}

// TestChangesSkewMargin: a publisher whose clock runs ahead of the NATS
// server stamps updatedAt later than the store time; a client that saw that
// stamp asks since it. The margin finds the change; without margin it is
// missed, which is what the margin is for.
func TestChangesSkewMargin(t *testing.T) {
	ahead := time.Now().Add(3 * time.Minute).UnixMilli()
	for _, tc := range []struct {
		margin time.Duration
		found  bool
	}{{0, true} /* default 5 min */, {time.Millisecond, false}} {
		f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.SkewMargin = tc.margin })
		tasks := room(t, "board-b1-tasks")
		f.publish(t, tasks, create("t1", ahead))
		res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorSince(ahead)})
		if tc.found {
			require.Equal(t, []string{"t1"}, ids(res.Changes))
		} else {
			require.Empty(t, res.Changes)
		}
	}
}

func TestChatOverNATS(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, nil)
	chat := room(t, "chat-bob-alice")
	now := time.Now().UnixMilli()
	var want []string
	var seqs []uint64
	for i := range 7 {
		env := message(fmt.Sprintf("m%d", i), now+int64(i))
		b, err := json.Marshal(env)
		require.NoError(t, err)
		want = append(want, string(b))
		seqs = append(seqs, f.publish(t, chat, env))
		f.publish(t, room(t, "chat-alice-carol"), message(fmt.Sprintf("other%d", i), now))
	}

	res := f.chat(t, proto.ChatArgs{RoomName: "chat-alice-bob", Cursor: cursorAfter(0)})
	require.False(t, res.HasMore)
	require.Nil(t, res.Next)
	require.True(t, res.Complete)
	require.Equal(t, want, raw(res.Messages))

	// Pages of 3 with hasMore and a cursor, neither skipping nor repeating.
	var got []string
	cur := cursorSince(now + 1)
	for {
		res := f.chat(t, proto.ChatArgs{RoomName: "chat-bob-alice", Cursor: cur, Limit: 3})
		require.LessOrEqual(t, len(res.Messages), 3)
		got = append(got, raw(res.Messages)...)
		if !res.HasMore {
			require.Nil(t, res.Next)
			break
		}
		cur = *res.Next
	}
	require.Equal(t, want[1:], got)

	res = f.chat(t, proto.ChatArgs{RoomName: "chat-alice-bob", Cursor: cursorAfter(seqs[5])})
	require.Equal(t, want[6:], raw(res.Messages))
}

// TestChatPageFitsBytes cuts a chat page on MaxBytes and goes on.
func TestChatPageFitsBytes(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.MaxBytes = 300 })
	chat := room(t, "chat-alice-bob")
	now := time.Now().UnixMilli()
	big := strings.Repeat("x", 120)
	for i := range 6 {
		env := proto.Envelope{Event: proto.EventNewMessage, ID: fmt.Sprintf("m%d", i), UpdatedAt: now, Data: json.RawMessage(`{"text":"` + big + `"}`)}
		f.publish(t, chat, env)
	}
	var n, pages int
	cur := cursorAfter(0)
	for {
		res := f.chat(t, proto.ChatArgs{RoomName: chat.Name(), Cursor: cur})
		require.NotEmpty(t, res.Messages)
		require.LessOrEqual(t, len(res.Messages), 2)
		n += len(res.Messages)
		pages++
		if !res.HasMore {
			break
		}
		cur = *res.Next
	}
	require.Equal(t, 6, n)
	require.GreaterOrEqual(t, pages, 3)
}

func raw(ms []json.RawMessage) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, string(m))
	}
	return out
}

func TestInvalidArguments(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, nil)
	for _, tc := range []struct {
		subject string
		args    any
	}{
		{proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-*-tasks", Cursor: cursorAfter(0)}},
		{proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-a.b", Cursor: cursorAfter(0)}},
		{proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "chat-a-b", Cursor: cursorAfter(0)}},
		{proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "client-c1", Cursor: cursorAfter(0)}},
		{proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-b1-tasks"}},
		{proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-b1-tasks", Cursor: proto.Cursor{Since: ptr[int64](1), AfterSeq: ptr[uint64](1)}}},
		{proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-b1-tasks", Cursor: cursorSince(-5)}},
		{proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-b1-tasks", Cursor: cursorAfter(0), Limit: -1}},
		{proto.SubjectSyncChanges, []byte(`{"roomName":`)},
		{proto.SubjectSyncChanges, []byte(`{"roomName":"board-b1-tasks","afterSeq":-1}`)},
		{proto.SubjectSyncChat, proto.ChatArgs{RoomName: "board-b1-tasks", Cursor: cursorAfter(0)}},
		{proto.SubjectSyncChat, proto.ChatArgs{RoomName: "chat-a-a", Cursor: cursorAfter(0)}},
		{proto.SubjectSyncChat, proto.ChatArgs{RoomName: "chat-a-b"}},
	} {
		err := f.request(tc.subject, tc.args, nil)
		require.Error(t, err, "%s %+v", tc.subject, tc.args)
		require.Equal(t, proto.CodeInvalidArgument, proto.CodeOf(err), "%s %+v: %v", tc.subject, tc.args, err)
	}
	// Counted just after the reply is sent: the last one may be a moment
	// behind the answer.
	counted := func() float64 {
		return testutil.ToFloat64(requestsCounter(t, f.reg, endpointChanges, string(proto.CodeInvalidArgument))) +
			testutil.ToFloat64(requestsCounter(t, f.reg, endpointChat, string(proto.CodeInvalidArgument)))
	}
	require.Eventually(t, func() bool { return counted() >= 13 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, 13.0, counted())
}

func requestsCounter(t *testing.T, reg *prometheus.Registry, endpoint, code string) prometheus.Counter {
	t.Helper()
	m := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roomcast_sync_requests_total",
		Help: "sync requests answered, by endpoint and code (ok on success).",
	}, []string{"endpoint", "code"})
	var dup prometheus.AlreadyRegisteredError
	require.True(t, asDup(reg.Register(m), &dup))
	return dup.ExistingCollector.(*prometheus.CounterVec).WithLabelValues(endpoint, code)
}

// TestIncompleteAfterRetention shortens the stream's max age so history is
// dropped, and checks that cursors before the drop get complete:false and
// cursors after it complete:true.
func TestIncompleteAfterRetention(t *testing.T) {
	store := proto.StoreConfig{MaxAge: time.Second}
	f := startSync(t, store, nil)
	tasks := room(t, "board-b1-tasks")
	start := time.Now().UnixMilli()
	f.publish(t, tasks, create("t1", start))
	res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorSince(start)})
	require.True(t, res.Complete, "a young stream that lost nothing is complete")

	// Wait until max age removed it.
	require.Eventually(t, func() bool {
		st, err := f.js.Stream(context.Background(), proto.StreamRooms)
		return err == nil && st.CachedInfo().State.FirstSeq > 1
	}, 15*time.Second, 50*time.Millisecond)
	last := f.publish(t, tasks, update("t2", time.Now().UnixMilli(), `{"a":1}`))

	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorSince(start)})
	require.False(t, res.Complete)
	require.Equal(t, []string{"t2"}, ids(res.Changes), "what is still there is reported")
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0)})
	require.False(t, res.Complete)
	res = f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(last - 1)})
	require.True(t, res.Complete)
	chat := f.chat(t, proto.ChatArgs{RoomName: "chat-a-b", Cursor: cursorAfter(0)})
	require.False(t, chat.Complete)
	require.Equal(t, 1.0, testutil.ToFloat64(incompleteCounter(t, f.reg, endpointChat)))
}

func incompleteCounter(t *testing.T, reg *prometheus.Registry, endpoint string) prometheus.Counter {
	t.Helper()
	m := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roomcast_sync_incomplete_total",
		Help: "Answers with complete:false (history no longer reaches back to the cursor), by endpoint.",
	}, []string{"endpoint"})
	var dup prometheus.AlreadyRegisteredError
	require.True(t, asDup(reg.Register(m), &dup))
	return dup.ExistingCollector.(*prometheus.CounterVec).WithLabelValues(endpoint)
}

func TestHTTPEndpoints(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.HTTPAddr = addr })
	f.changes(t, proto.ChangesArgs{RoomName: "board-b1-tasks", Cursor: cursorAfter(0)})

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, _ := get("/healthz")
	require.Equal(t, http.StatusOK, code)
	code, _ = get("/readyz")
	require.Equal(t, http.StatusOK, code)
	code, body := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `roomcast_sync_requests_total{code="ok",endpoint="changes"}`)
	require.Contains(t, body, `roomcast_sync_request_duration_seconds_bucket`)

	// Not ready once the stream is gone.
	require.NoError(t, f.js.DeleteStream(context.Background(), proto.StreamRooms))
	code, _ = get("/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	err = f.request(proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-b1-tasks", Cursor: cursorAfter(0)}, nil)
	require.Equal(t, proto.CodeUnavailable, proto.CodeOf(err))
}
