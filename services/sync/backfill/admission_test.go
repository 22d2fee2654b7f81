package backfill

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// admissionProbe runs waiters that hold their slot until the test releases
// their user, and records what ran at once.
type admissionProbe struct {
	t       *testing.T
	a       *admission
	mu      sync.Mutex
	running map[string]int
	most    map[string]int // the most of a user's requests running at once
	all     int            // the most running at once, in all
	gates   map[string]chan struct{}
	started chan string
	refused chan time.Duration
}

func newAdmissionProbe(t *testing.T, a *admission) *admissionProbe {
	return &admissionProbe{t: t, a: a, running: map[string]int{}, most: map[string]int{}, gates: map[string]chan struct{}{},
		started: make(chan string, 100), refused: make(chan time.Duration, 100)}
}

func (p *admissionProbe) gate(user string) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gates[user] == nil {
		p.gates[user] = make(chan struct{})
	}
	return p.gates[user]
}

func (p *admissionProbe) admit(user string) {
	gate := p.gate(user)
	p.a.admit(user, &waiter{
		run: func() {
			p.mu.Lock()
			p.running[user]++
			p.most[user] = max(p.most[user], p.running[user])
			total := 0
			for _, n := range p.running {
				total += n
			}
			p.all = max(p.all, total)
			p.mu.Unlock()
			p.started <- user
			<-gate
			p.mu.Lock()
			p.running[user]--
			p.mu.Unlock()
			p.a.done(user, time.Millisecond)
		},
		refuse: func(d time.Duration) { p.refused <- d },
	})
}

// next is the user of the next request that starts.
func (p *admissionProbe) next() string {
	p.t.Helper()
	select {
	case u := <-p.started:
		return u
	case <-time.After(5 * time.Second):
		p.t.Fatal("no request started")
	}
	return ""
}

// counts are the admission's own running and waiting counts.
func (p *admissionProbe) counts() (running, queued int) {
	p.a.mu.Lock()
	defer p.a.mu.Unlock()
	return p.a.running, p.a.queued
}

// TestAdmissionSharesSlotsFairly: one user's flood takes at most its share
// of the slots and of the queue, the rest of it is refused at once with a
// retry hint; other users' requests start at once while slots are free, and
// waiting requests are served one per user in turn, never beyond a user's
// share.
func TestAdmissionSharesSlotsFairly(t *testing.T) {
	p := newAdmissionProbe(t, newAdmission(4, 2, 3, 100, time.Hour))
	for range 10 {
		p.admit("flood")
	}
	require.Equal(t, "flood", p.next())
	require.Equal(t, "flood", p.next())
	for range 5 {
		select {
		case d := <-p.refused:
			require.Positive(t, d)
		case <-time.After(5 * time.Second):
			t.Fatal("the flood beyond its line was not refused at once")
		}
	}
	running, queued := p.counts()
	require.Equal(t, 2, running, "the flood holds its share of the slots, no more")
	require.Equal(t, 3, queued)

	// Others start at once: the flood left them slots.
	p.admit("v")
	require.Equal(t, "v", p.next())
	p.admit("w")
	require.Equal(t, "w", p.next())
	p.admit("x") // every slot taken: x waits, behind the flood's line
	running, queued = p.counts()
	require.Equal(t, 4, running)
	require.Equal(t, 4, queued)

	// Turns: the flood's next, then x's, not the flood's whole line first.
	p.gate("flood") <- struct{}{}
	require.Equal(t, "flood", p.next())
	p.gate("v") <- struct{}{}
	require.Equal(t, "x", p.next())
	// A free slot is not taken by a user already at its share.
	p.gate("w") <- struct{}{}
	require.Eventually(t, func() bool { r, _ := p.counts(); return r == 3 }, 5*time.Second, time.Millisecond)
	_, queued = p.counts()
	require.Equal(t, 2, queued, "the flood's two left wait for its own reads")
	p.gate("flood") <- struct{}{}
	require.Equal(t, "flood", p.next())

	p.mu.Lock()
	defer p.mu.Unlock()
	require.Equal(t, 2, p.most["flood"])
	require.Equal(t, 4, p.all)
}

// TestAdmissionRefusesTheLate: a request that waited longer than maxWait is
// refused when its turn comes, not read.
func TestAdmissionRefusesTheLate(t *testing.T) {
	p := newAdmissionProbe(t, newAdmission(1, 1, 4, 100, time.Nanosecond))
	p.admit("u")
	require.Equal(t, "u", p.next())
	p.admit("u")
	p.gate("u") <- struct{}{}
	select {
	case d := <-p.refused:
		require.Positive(t, d)
	case u := <-p.started:
		t.Fatalf("a late request of %s was read", u)
	case <-time.After(5 * time.Second):
		t.Fatal("the late request was not answered")
	}
	require.Eventually(t, func() bool { r, q := p.counts(); return r == 0 && q == 0 }, 5*time.Second, time.Millisecond)
	p.a.mu.Lock()
	require.Empty(t, p.a.users, "an idle user's line is forgotten")
	p.a.mu.Unlock()
}

// TestFloodDoesNotStarveOthers: through NATS, one user's flood of reads of
// a large room is answered (the part beyond its share rate_limited, at
// once, with a retry hint), while another user's reads of a small room,
// made during the flood, are all answered with their changes.
func TestFloodDoesNotStarveOthers(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) {
		c.Concurrency = 2
		c.UserConcurrency = 1
		c.UserQueue = 1
	})
	big, small := room(t, "board-big-tasks"), room(t, "board-small-tasks")
	now := time.Now().UnixMilli()
	var futures []jetstream.PubAckFuture
	for i := range 3000 {
		fut, err := f.publishAsync(big, update(fmt.Sprintf("t%d", i%10), now+int64(i), `{"n":1}`))
		require.NoError(t, err)
		futures = append(futures, fut)
	}
	for i := range 20 {
		fut, err := f.publishAsync(small, update(fmt.Sprintf("s%d", i), now, `{"n":1}`))
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

	const flood = 40
	codes := make(chan proto.Code, flood)
	hints := make(chan int64, flood)
	var wg sync.WaitGroup
	for range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var res proto.ChangesResult
			err := f.request(proto.SubjectSyncChanges, proto.HistoryRequest{
				ChangesArgs: proto.ChangesArgs{RoomName: big.Name(), Cursor: cursorAfter(0), Limit: 1000},
				UserID:      "flooder",
			}, &res)
			if err == nil {
				codes <- "ok"
				return
			}
			codes <- proto.CodeOf(err)
			if e, ok := err.(*proto.Error); ok {
				hints <- e.RetryAfterMs
			}
		}()
	}
	for range 10 {
		var res proto.ChangesResult
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // the gateway's wait
		err := proto.Request(ctx, f.nc, proto.SubjectSyncChanges, proto.HistoryRequest{
			ChangesArgs: proto.ChangesArgs{RoomName: small.Name(), Cursor: cursorAfter(0)},
			UserID:      "reader",
		}, &res)
		cancel()
		require.NoError(t, err, "the other user's read during the flood")
		require.Len(t, res.Changes, 20)
	}
	wg.Wait()
	close(codes)
	close(hints)
	n := map[proto.Code]int{}
	for c := range codes {
		n[c]++
	}
	require.Equal(t, flood, n["ok"]+n[proto.CodeRateLimited], "every flood request answered ok or rate_limited: %v", n)
	require.Positive(t, n["ok"])
	require.Positive(t, n[proto.CodeRateLimited])
	for h := range hints {
		require.Positive(t, h, "rate_limited without a retry hint")
	}
}

// TestPageReadsWhatItReturns: a read with limit N takes in at most N+1 of
// the room's messages, wherever its cursor starts and however many the
// room holds (issue 13.4: a since:0 read of 10,000 updates of 100 tasks
// read them all); the pages that follow go on from its cursor.
func TestPageReadsWhatItReturns(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, nil)
	tasks, chat := room(t, "board-many-tasks"), room(t, "chat-a-b")
	now := time.Now().UnixMilli()
	var futures []jetstream.PubAckFuture
	const n = 2000
	for i := range n {
		fut, err := f.publishAsync(tasks, update(fmt.Sprintf("t%d", i%10), now+int64(i), `{"n":1}`))
		require.NoError(t, err)
		futures = append(futures, fut)
		fut, err = f.publishAsync(chat, message(fmt.Sprintf("m%d", i), now+int64(i)))
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
	scanned := func(endpoint string) float64 {
		return metricValue(t, f.reg, "roomcast_sync_messages_scanned_total", map[string]string{"endpoint": endpoint})
	}

	for _, cur := range []proto.Cursor{cursorSince(0), cursorAfter(0), cursorAfter(uint64(n))} {
		before := scanned(endpointChanges)
		res := f.changes(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cur, Limit: 50})
		require.LessOrEqual(t, scanned(endpointChanges)-before, float64(51), "messages taken in for a page of 50")
		require.Len(t, res.Changes, 10, "51 updates of 10 tasks")
		require.NotNil(t, res.Next, "the room goes on")
	}
	before := scanned(endpointChat)
	res := f.chat(t, proto.ChatArgs{RoomName: chat.Name(), Cursor: cursorSince(0), Limit: 50})
	require.LessOrEqual(t, scanned(endpointChat)-before, float64(51))
	require.Len(t, res.Messages, 50)
	require.True(t, res.HasMore)

	// Followed to the end, the pages give every task's latest change.
	all := f.allChanges(t, proto.ChangesArgs{RoomName: tasks.Name(), Cursor: cursorAfter(0), Limit: 50})
	require.Len(t, all.Changes, 10)
	for i, c := range all.Changes {
		require.Equal(t, fmt.Sprintf("t%d", (n-10+i)%10), c.ID)
		require.Equal(t, now+int64(n-10+i), c.UpdatedAt)
	}
}

// publishAsync publishes env to r as a domain service would, without
// waiting for the stream's ack.
func (f *fixture) publishAsync(r proto.Room, env proto.Envelope) (jetstream.PubAckFuture, error) {
	data, id, err := f.pub.Encode(r, env)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(f.cfg.Store.Subjects.Publish(r))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	return f.js.PublishMsgAsync(msg)
}
