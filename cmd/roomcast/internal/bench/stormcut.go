package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// A storm with -cut-broadcasts: the sockets are cut and kept away while
// broadcasts go to their rooms, then come back; the storm then counts how
// each caught up. Steps 1 and 2 of the workers' counters tell the warm-up
// broadcast from the missed ones.
const (
	stepWarm = 1 // one broadcast per board before the cut: every socket then holds an offset and a last seq
	stepCut  = 2 // the broadcasts published while the sockets are away
)

// stormCut is what the cut measured before the sockets came back.
type stormCut struct {
	dropped  int
	cpu      time.Duration // the server's CPU from the cut until the sockets were let go
	metrics  []metric
	notes    []string
	firstErr string // the workers' first failure after the drop, for the notes
}

// cutSockets warms the sockets up, cuts them, waits until the server has
// seen every one go, publishes o.CutBroadcasts broadcasts to each board and
// waits until they are stored. The sockets stay away until the next drop.
func cutSockets(ctx context.Context, o options, srv *server, f *fleet, connected int, log io.Writer) (*stormCut, error) {
	boards := min(o.Rooms, o.Sockets)
	pub := srv.newPublisher()
	if _, err := f.command(ctx, workerCmd{Cmd: "step", Step: stepWarm}); err != nil {
		return nil, err
	}
	if err := publishBoards(ctx, pub, boards, 1, stepWarm); err != nil {
		return nil, err
	}
	if got, err := waitDelivered(ctx, f, uint64(connected), 30*time.Second); err != nil {
		return nil, fmt.Errorf("before the cut, one broadcast per board: %w (%d of %d sockets got it)", err, got, connected)
	}
	if _, err := f.command(ctx, workerCmd{Cmd: "step", Step: stepCut}); err != nil {
		return nil, err
	}

	c := &stormCut{}
	before, procErr := readProc(srv.pid)
	t0 := time.Now()
	evs, err := f.command(ctx, workerCmd{Cmd: "cut"})
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		c.dropped += ev.Expected
	}
	if err := waitGatewaySockets(ctx, srv.url, 0, 30*time.Second); err != nil {
		return nil, fmt.Errorf("after the cut: %w", err)
	}
	fmt.Fprintf(log, "%s: cut: the server saw %d sockets go in %s\n", srv.name, c.dropped, time.Since(t0).Round(time.Millisecond))
	c.metrics, c.notes = sessionRecords(ctx, srv, c.dropped, 30*time.Second, log)

	if err := publishBoards(ctx, pub, boards, o.CutBroadcasts, stepCut); err != nil {
		return nil, err
	}
	if failed, err := pub.wait(ctx); err != nil {
		return nil, fmt.Errorf("the broadcasts of the cut: %w", err)
	} else if failed > 0 {
		return nil, fmt.Errorf("the broadcasts of the cut: %d publishes failed", failed)
	}
	fmt.Fprintf(log, "%s: cut: %d broadcasts to each of %d boards stored\n", srv.name, o.CutBroadcasts, boards)
	if after, err := readProc(srv.pid); err == nil && procErr == nil && srv.pid > 0 {
		c.cpu = after.CPU - before.CPU
	}
	return c, nil
}

// sessionRecords waits until KV SESSIONS holds a record per socket cut (the
// gateway writes one as it sees each go) and measures them: how many, a
// record's value and key, what the bucket's stream counts per record and
// holds on disk, and the server's RSS with them. The same metrics, zero,
// when there is no bucket or no record (recovery off), so that the runs of
// -recovery both line up.
func sessionRecords(ctx context.Context, srv *server, want int, timeout time.Duration, log io.Writer) ([]metric, []string) {
	var notes []string
	var values, streamBytes uint64
	var valueSize, keySize float64
	var disk int64
	kv, err := srv.js.KeyValue(ctx, proto.BucketSessions)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		notes = append(notes, "no "+proto.BucketSessions+" bucket: the server keeps no sessions")
	case err != nil:
		notes = append(notes, fmt.Sprintf("%s: %v", proto.BucketSessions, err))
	default:
		// The records are written as the gateway sees the sockets go,
		// asynchronously: wait until one per socket is stored, or
		// until none has come for a second.
		deadline, last, lastAt := time.Now().Add(timeout), uint64(0), time.Now()
		for {
			st, err := kv.Status(ctx)
			if err != nil {
				notes = append(notes, fmt.Sprintf("%s status: %v", proto.BucketSessions, err))
				break
			}
			values, streamBytes = st.Values(), st.Bytes()
			if values != last {
				last, lastAt = values, time.Now()
			}
			if values >= uint64(want) || time.Now().After(deadline) || time.Since(lastAt) > time.Second || ctx.Err() != nil {
				break
			}
			sleepCtx(ctx, 50*time.Millisecond)
		}
		valueSize, keySize = sampleRecords(ctx, kv, 100)
		disk = dirSize(srv.dataDir, "KV_"+proto.BucketSessions)
	}
	if values < uint64(want) && values > 0 {
		notes = append(notes, fmt.Sprintf("%d session records for %d sockets cut", values, want))
	}
	perRecord := func(total float64) float64 {
		if values == 0 {
			return 0
		}
		return total / float64(values)
	}
	rss := 0.0
	if p, err := readProc(srv.pid); err == nil && srv.pid > 0 {
		rss = float64(p.RSS) / (1 << 20)
	}
	fmt.Fprintf(log, "%s: cut: %d session records, %.0f B stored per record (value %.0f B, key %.0f B), %.1f MiB on disk\n",
		srv.name, values, perRecord(float64(streamBytes)), valueSize, keySize, float64(disk)/(1<<20))
	return []metric{
		{Name: "session records after the cut", Value: float64(values)},
		{Name: "session record value", Value: valueSize, Unit: "B"},
		{Name: "session record key (pid)", Value: keySize, Unit: "B"},
		{Name: "SESSIONS stream bytes per record", Value: perRecord(float64(streamBytes)), Unit: "B"},
		{Name: "SESSIONS on disk", Value: float64(disk) / (1 << 20), Unit: "MiB"},
		{Name: "server RSS with the sockets cut", Value: rss, Unit: "MiB"},
	}, notes
}

// sampleRecords is the mean size of up to n records' values and keys.
func sampleRecords(ctx context.Context, kv jetstream.KeyValue, n int) (value, key float64) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return 0, 0
	}
	defer func() { _ = lister.Stop() }()
	var values, keys, got int
	for k := range lister.Keys() {
		if got == n {
			continue // drain: Stop ends the listing
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		values += len(e.Value())
		keys += len(k)
		got++
	}
	if got == 0 {
		return 0, 0
	}
	return float64(values) / float64(got), float64(keys) / float64(got)
}

// dirSize is the size of the files under the directories named name
// below root (the JetStream store keeps a stream in a directory of its
// name): what they hold on disk, in bytes allocated.
func dirSize(root, name string) int64 {
	var total int64
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || d.Name() != name {
			return nil
		}
		_ = filepath.WalkDir(path, func(_ string, f fs.DirEntry, err error) error {
			if err != nil || f.IsDir() {
				return nil
			}
			if info, err := f.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					total += st.Blocks * 512
				} else {
					total += info.Size()
				}
			}
			return nil
		})
		return filepath.SkipDir
	})
	return total
}

// tally turns the workers' tallies into metrics: how many got every
// broadcast they missed, replayed (recovered) or by resync, and when the
// last of them had (from t0, the drop).
func (c *stormCut) tally(evs []workerEvent, t0 time.Time, want int) []metric {
	var back, recovered, byReplay, byResync, resyncFailed int
	var dups, gaps, retries uint64
	var caughtUp int64
	for _, ev := range evs {
		if ev.Error != "" && c.firstErr == "" {
			c.firstErr = ev.Error
		}
		back += ev.Rejoined
		recovered += ev.Recovered
		byReplay += ev.CompleteRecovered
		byResync += ev.CompleteResync
		resyncFailed += ev.ResyncFailures
		dups += ev.Duplicates
		retries += ev.ResyncRetries
		gaps += ev.GapsAfterReturn
		caughtUp = max(caughtUp, ev.CaughtUpNs)
	}
	took := 0.0
	if caughtUp > 0 {
		took = time.Duration(caughtUp - t0.UnixNano()).Seconds()
	}
	complete := byReplay + byResync
	if complete < back {
		c.notes = append(c.notes, fmt.Sprintf("%d of %d sockets back did not get every one of the %d broadcasts they missed (%d resyncs failed)",
			back-complete, back, want, resyncFailed))
	}
	if c.firstErr != "" {
		c.notes = append(c.notes, "first failure: "+c.firstErr)
	}
	return []metric{
		{Name: "broadcasts missed per socket", Value: float64(want)},
		{Name: "recovered with every missed broadcast", Value: float64(byReplay), Higher: true},
		{Name: "not recovered, resynced every missed change", Value: float64(byResync)},
		{Name: "sockets short of a missed broadcast", Value: float64(back - complete)},
		{Name: "resyncs refused rate_limited, asked again", Value: float64(retries)},
		{Name: "broadcasts received twice", Value: float64(dups)},
		{Name: "broadcasts out of order (gaps)", Value: float64(gaps)},
		{Name: "time until all caught up", Value: took, Unit: "s"},
	}
}

// publishBoards publishes n benchmark broadcasts of step to each of the
// boards' tasks rooms.
func publishBoards(ctx context.Context, pub publisher, boards, n int, step int64) error {
	for j := range n {
		for k := range boards {
			room, env, err := benchEnvelope(k, uint64(step)*1_000_000+uint64(j), step, time.Now(), "")
			if err != nil {
				return err
			}
			if err := pub.add(ctx, room, env); err != nil {
				return err
			}
		}
	}
	return pub.flush(ctx)
}

// waitDelivered waits until the workers have counted want deliveries of
// the current step, and returns how many they had.
func waitDelivered(ctx context.Context, f *fleet, want uint64, timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	for {
		evs, err := f.command(ctx, workerCmd{Cmd: "report"})
		if err != nil {
			return 0, err
		}
		var got uint64
		for _, ev := range evs {
			got += ev.Delivered
		}
		switch {
		case got >= want:
			return got, nil
		case time.Now().After(deadline):
			return got, fmt.Errorf("not delivered within %s", timeout)
		case ctx.Err() != nil:
			return got, ctx.Err()
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// waitGatewaySockets waits until roomcast's gateway counts n sockets
// (roomcast_gateway_sockets on /metrics).
func waitGatewaySockets(ctx context.Context, url string, n float64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		v, err := scrapeMetric(ctx, url, "roomcast_gateway_sockets")
		switch {
		case err == nil && v == n:
			return nil
		case time.Now().After(deadline):
			if err != nil {
				return err
			}
			return fmt.Errorf("the gateway still counts %.0f sockets after %s, want %.0f", v, timeout, n)
		case ctx.Err() != nil:
			return ctx.Err()
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
}

// scrapeMetric reads the value of an unlabelled metric from the server's
// /metrics.
func scrapeMetric(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s/metrics has no %s", url, name)
}
