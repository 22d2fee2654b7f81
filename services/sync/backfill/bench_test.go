package backfill

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// The benchmarks share one stream, filled once per test binary: filling
// 1,000,000 messages takes about a minute, and `go test -count 6` (for
// benchstat) would otherwise fill it six times. TestMain stops it.
var (
	benchOnce  sync.Once
	benchState *benchStream
	benchErr   error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchState != nil {
		benchState.stop()
	}
	os.Exit(code)
}

// benchStream is a server, a sync service and a stream of `total` messages
// over 1,000 rooms (file storage, the stream's real configuration):
//
//   - the background: `total` messages published round-robin to 1,000 rooms;
//     one of them, board-recent-tasks, has every message a resource of its
//     own, stamped with the publisher's clock (about total/1000 messages
//     spread through the whole stream);
//   - the scattered rooms board-r10|r100|r1000-tasks, whose 10, 100 and 1,000
//     changes (100 resources at most) are spread evenly through the stream.
type benchStream struct {
	f     *fixture
	svc   *service
	total int
	// recentSeqs and recentAt are board-recent-tasks's messages: stream
	// sequence and updatedAt, in stream order.
	recentSeqs []uint64
	recentAt   []int64
	// burstAfter is the sequence just before board-burst-tasks's 100
	// changes, published back to back after the fill; burstAt is the first
	// one's updatedAt.
	burstAfter uint64
	burstAt    int64
	began      int64 // updatedAt just before the fill (the scattered `since`)
	stop       func()
}

var (
	benchBurst     = "board-burst-tasks"
	benchRecent    = "board-recent-tasks"
	benchScattered = []int{10, 100, 1000}
)

func benchTotal() (int, error) {
	if v := os.Getenv("ROOMCAST_SYNC_BENCH_STREAM"); v != "" {
		return strconv.Atoi(v)
	}
	return 100_000, nil
}

// benchTailMessages is the service's TailMessages: -1 to compare with the
// reads the tail replaced (ROOMCAST_SYNC_BENCH_TAIL_MESSAGES).
func benchTailMessages() (int, error) {
	if v := os.Getenv("ROOMCAST_SYNC_BENCH_TAIL_MESSAGES"); v != "" {
		return strconv.Atoi(v)
	}
	return 0, nil
}

// sharedBenchStream builds the shared stream on first use.
func sharedBenchStream(b *testing.B) *benchStream {
	b.Helper()
	benchOnce.Do(func() { benchState, benchErr = newBenchStream(b) })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchState
}

func newBenchStream(b *testing.B) (*benchStream, error) {
	total, err := benchTotal()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "roomcast-sync-bench-")
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, err
	}
	srv.Start()
	bs := &benchStream{total: total}
	var stops []func()
	bs.stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	stops = append(stops, func() { srv.Shutdown(); srv.WaitForShutdown(); _ = os.RemoveAll(dir) })
	fail := func(err error) (*benchStream, error) { bs.stop(); return nil, err }
	if !srv.ReadyForConnections(10 * time.Second) {
		return fail(fmt.Errorf("server not ready"))
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return fail(err)
	}
	stops = append(stops, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	store := proto.StoreConfig{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = proto.Ensure(ctx, js, store)
	cancel()
	if err != nil {
		return fail(err)
	}
	tail, err := benchTailMessages()
	if err != nil {
		return fail(err)
	}
	reg := prometheus.NewRegistry()
	// MaxTime is raised so a cold read (blocks loaded from disk) is measured
	// rather than cut; the margin is short so that a `since` just before the
	// room's last 100 changes reads about those (the fill is compressed into
	// a minute, where a real stream spreads it over days).
	built := make(chan *service, 1)
	cfg := Config{NATSURL: srv.ClientURL(), Store: store, Registry: reg, Logger: zerolog.New(io.Discard),
		MaxLimit: 1000, MaxTime: time.Minute, SkewMargin: time.Second, TailMessages: tail,
		serviceHook: func(s *service) { built <- s }}
	sctx, scancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(sctx, cfg) }()
	stops = append(stops, func() { scancel(); <-done })
	bs.svc = <-built
	bs.f = &fixture{nc: nc, js: js, pub: proto.NewPublisher(js, store.Subjects), reg: reg, cfg: cfg}
	// Ready once it answers (no responders until the endpoints exist).
	require.Eventually(b, func() bool {
		var res proto.ChangesResult
		return bs.f.request(proto.SubjectSyncChanges, proto.ChangesArgs{RoomName: "board-ready-tasks", Cursor: cursorAfter(0)}, &res) == nil
	}, 10*time.Second, 20*time.Millisecond)
	if err := bs.fill(b); err != nil {
		return fail(err)
	}
	return bs, nil
}

func (bs *benchStream) fill(b *testing.B) error {
	f, subjects, total := bs.f, bs.f.cfg.Store.Subjects, bs.total
	began := time.Now()
	bs.began = began.UnixMilli()
	now := bs.began
	recent := room(b, benchRecent)
	others := make([]proto.Room, 1000)
	others[0] = recent
	for i := 1; i < len(others); i++ {
		others[i] = room(b, fmt.Sprintf("board-o%d-tasks", i))
	}
	scattered := make([]proto.Room, len(benchScattered))
	every := make([]int, len(benchScattered))
	for i, n := range benchScattered {
		scattered[i] = room(b, fmt.Sprintf("board-r%d-tasks", n))
		every[i] = max(1, total/n)
	}
	type pending struct {
		fut    jetstream.PubAckFuture
		recent bool
	}
	futures := make([]pending, 0, 4096)
	wait := func() error {
		for _, p := range futures {
			select {
			case ack := <-p.fut.Ok():
				if p.recent {
					bs.recentSeqs = append(bs.recentSeqs, ack.Sequence)
				}
			case err := <-p.fut.Err():
				return err
			}
		}
		futures = futures[:0]
		return nil
	}
	publish := func(r proto.Room, env proto.Envelope) error {
		data, id, err := f.pub.Encode(r, env)
		if err != nil {
			return err
		}
		msg := nats.NewMsg(subjects.Publish(r))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, id)
		fut, err := f.js.PublishMsgAsync(msg, jetstream.WithStallWait(30*time.Second))
		if err != nil {
			return err
		}
		futures = append(futures, pending{fut: fut, recent: r == recent})
		return nil
	}
	published := make([]int, len(benchScattered))
	for i := 0; i < total; i++ {
		r := others[i%len(others)]
		env := update(fmt.Sprintf("x%d", i), now, `{"n":1}`)
		if r == recent {
			at := time.Now().UnixMilli()
			env = update(fmt.Sprintf("c%d", len(bs.recentAt)), at, `{"n":1}`)
			bs.recentAt = append(bs.recentAt, at)
		}
		if err := publish(r, env); err != nil {
			return err
		}
		for k, n := range benchScattered {
			if i%every[k] == 0 && published[k] < n {
				id := fmt.Sprintf("t%d", published[k]%100) // collapses to ≤ 100 resources
				if err := publish(scattered[k], update(id, now+int64(i), `{"n":1}`)); err != nil {
					return err
				}
				published[k]++
			}
		}
		if len(futures) >= 4000 {
			if err := wait(); err != nil {
				return err
			}
		}
	}
	if err := wait(); err != nil {
		return err
	}
	// Acks of one async batch may come in any order; the sequences are the
	// stream order.
	if len(bs.recentSeqs) < 2 {
		return fmt.Errorf("stream of %d messages gives %s only %d messages; want at least 2", total, benchRecent, len(bs.recentSeqs))
	}
	for i := 1; i < len(bs.recentSeqs); i++ {
		if bs.recentSeqs[i] <= bs.recentSeqs[i-1] {
			return fmt.Errorf("%s: acks out of order", benchRecent)
		}
	}
	// The burst: 100 changes back to back at the end of the stream.
	burst := room(b, benchBurst)
	bs.burstAt = time.Now().UnixMilli()
	for i := range 100 {
		if err := publish(burst, update(fmt.Sprintf("b%d", i), bs.burstAt, `{"n":1}`)); err != nil {
			return err
		}
	}
	var last uint64
	for _, p := range futures {
		select {
		case ack := <-p.fut.Ok():
			last = max(last, ack.Sequence)
		case err := <-p.fut.Err():
			return err
		}
	}
	futures = futures[:0]
	bs.burstAfter = last - 100
	b.Logf("stream: %d messages over 1,000 rooms (+%d scattered), published in %s", total, sum(benchScattered), time.Since(began).Round(time.Millisecond))
	return nil
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// BenchmarkChanges measures one sync.changes request, end to end over NATS
// (request, stream reads, completeness check, reply), among a stream of
// $ROOMCAST_SYNC_BENCH_STREAM messages (default 100,000 so `make bench` stays
// quick; the figure is with 1,000,000) over 1,000 rooms:
//
//   - recent: the realistic case, a client that was away for a while. A room
//     with a message every 1,000 stream messages, asked for its last 100
//     changes (afterSeq, or since their first updatedAt), which sit in the
//     last tenth of the stream;
//
//   - burst: a room's 100 changes published back to back at the end of the
//     stream (what `roomcast bench resync` calls back to back), read with
//     one batched direct get;
//
//   - scattered: the worst case. A room's 10, 100 or 1,000 changes spread
//     evenly through the whole stream, read from its beginning (afterSeq 0,
//     or a since before the stream), so every change sits in a different
//     stream block.
//
//     ROOMCAST_SYNC_BENCH_STREAM=1000000 go test -run '^$' -bench Changes -count 6 ./backfill
func BenchmarkChanges(b *testing.B) {
	bs := sharedBenchStream(b)
	// The last 100 changes (fewer when the stream is too short for 101).
	n := len(bs.recentSeqs)
	k := min(100, n-1)
	afterSeq := bs.recentSeqs[n-k-1]
	since := bs.recentAt[n-k]
	wantSince := 0
	for _, at := range bs.recentAt {
		if at >= since {
			wantSince++
		}
	}
	for _, mode := range []string{"afterSeq", "since"} {
		args := proto.ChangesArgs{RoomName: benchRecent, Cursor: cursorAfter(afterSeq), Limit: 1000}
		want := k
		if mode == "since" {
			args.Cursor, want = cursorSince(since), wantSince
		}
		b.Run(fmt.Sprintf("stream=%d/recent=%d/%s", bs.total, k, mode), func(b *testing.B) {
			benchRequest(b, bs.f, args, want)
		})
	}
	for _, mode := range []string{"afterSeq", "since"} {
		args := proto.ChangesArgs{RoomName: benchBurst, Cursor: cursorAfter(bs.burstAfter), Limit: 1000}
		if mode == "since" {
			args.Cursor = cursorSince(bs.burstAt)
		}
		b.Run(fmt.Sprintf("stream=%d/burst=100/%s", bs.total, mode), func(b *testing.B) {
			benchRequest(b, bs.f, args, 100)
		})
	}
	for _, n := range benchScattered {
		for _, mode := range []string{"afterSeq", "since"} {
			args := proto.ChangesArgs{RoomName: fmt.Sprintf("board-r%d-tasks", n), Cursor: cursorAfter(0), Limit: 1000}
			if mode == "since" {
				args.Cursor = cursorSince(bs.began)
			}
			b.Run(fmt.Sprintf("stream=%d/scattered=%d/%s", bs.total, n, mode), func(b *testing.B) {
				benchRequest(b, bs.f, args, min(n, 100))
			})
		}
	}
}

func benchRequest(b *testing.B, f *fixture, args proto.ChangesArgs, want int) {
	for b.Loop() {
		var res proto.ChangesResult
		if err := f.request(proto.SubjectSyncChanges, args, &res); err != nil {
			b.Fatal(err)
		}
		if res.Next != nil || len(res.Changes) != want || !res.Complete {
			b.Fatalf("got %d changes (want %d), next %v, complete %v", len(res.Changes), want, res.Next, res.Complete)
		}
	}
}

// BenchmarkReaders measures each reader alone on the shared stream (as
// BenchmarkChanges, without the request around it): what each costs on the
// reads it may be given, which decides whether it earns its place. The
// index's reader as on a replicated stream (index-leader) and the consumer
// are what a replicated stream uses; the walk is what a stream of one
// replica uses where the index cannot answer. A reader that declines (the
// tail without bodies kept) is reported as such.
//
//	go test -run '^$' -bench Readers -count 6 ./backfill
func BenchmarkReaders(b *testing.B) {
	bs := sharedBenchStream(b)
	n := len(bs.recentSeqs)
	k := min(100, n-1)
	subject := func(name string) string { return bs.f.cfg.Store.Subjects.Publish(room(b, name)) }
	cases := []struct {
		name    string
		subject string
		start   start
		want    int
	}{
		{fmt.Sprintf("recent=%d", k), subject(benchRecent), start{afterSeq: bs.recentSeqs[n-k-1]}, k},
		{"burst=100", subject(benchBurst), start{afterSeq: bs.burstAfter}, 100},
		// The common resync: a few messages, or none, since the cursor.
		{"burst-last=3", subject(benchBurst), start{afterSeq: bs.burstAfter + 97}, 3},
		{"nothing-new", subject(benchBurst), start{afterSeq: bs.burstAfter + 200}, 0},
		{"scattered=100", subject("board-r100-tasks"), start{}, 100},
		{"scattered=1000", subject("board-r1000-tasks"), start{}, 1000},
	}
	for _, c := range cases {
		for _, rd := range bs.svc.allReaders() {
			b.Run(fmt.Sprintf("stream=%d/%s/%s", bs.total, c.name, rd.name), func(b *testing.B) {
				rq := readRequest{subject: c.subject, start: c.start, want: c.want + 1}
				for b.Loop() {
					rq.budget = budget{maxScan: c.want + 2, maxBytes: DefaultMaxBytes, deadline: time.Now().Add(time.Minute)}
					got := 0
					res, ok, err := rd.read(context.Background(), rq, func(stored) bool { got++; return true })
					if err != nil {
						b.Fatal(err)
					}
					if !ok {
						b.Skip("declines")
					}
					if got != c.want || res.cut != cutNone {
						b.Fatalf("read %d of %d (%s)", got, c.want, res.cut)
					}
				}
			})
		}
	}
}
