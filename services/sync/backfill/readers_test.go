package backfill

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

// allReaders is every reader the service has, under its name, each asked
// alone: the index's reader twice, as on a stream of one replica and as on
// a replicated one (on one server the leader answers what it is asked).
func (s *service) allReaders() []namedReader {
	return []namedReader{
		{"tail", tailReader{s}},
		{"index", s.indexDirect},
		{"index-leader", s.indexChecked},
		{"walk", s.walk},
		{"consumer", s.consumer},
	}
}

// TestReadersMatchStream is the readers' contract, run against every reader
// on the same random streams as TestTailMatchesStream (bodies of every
// size, deletes, purges, front cuts, restarts): asked the same read, each
// reader that answers visits the stream's messages of the room from the
// start, in order, with their bodies and store times, and stops where the
// stream's answer does: after the page when there is more (cutLimit), at
// the room's end otherwise; with a small byte budget, a prefix of them
// that stops at the budget. The tail and the index may decline a read
// (visiting nothing); each answers some.
func TestReadersMatchStream(t *testing.T) {
	f := startTailFixture(t, 8)
	rng := rand.New(rand.NewPCG(18, 2026))
	answered := map[string]int{}
	f.randomRounds(t, rng, 12, func(rs *randomStream, c streamCopy) {
		for range 20 {
			r := rs.rooms[rng.IntN(len(rs.rooms))]
			subject := proto.Subjects{}.Publish(r)
			st := startOf(rs.cursor(rng), DefaultSkewMargin)
			k := []int{1, 3, 100, 300}[rng.IntN(4)]
			maxBytes, small := DefaultMaxBytes, rng.IntN(4) == 0
			if small {
				maxBytes = 1 + rng.IntN(3*tailMaxMessage)
			}
			want := c.from(subject, st)
			for _, rd := range f.svc.allReaders() {
				rq := readRequest{subject: subject, start: st, want: k,
					budget: budget{maxScan: k + 1, maxBytes: maxBytes, deadline: time.Now().Add(10 * time.Second)}}
				var got []stored
				res, ok, err := rd.read(context.Background(), rq, func(m stored) bool {
					if len(got) == k {
						return false
					}
					got = append(got, m)
					return true
				})
				require.NoError(t, err, rd.name)
				if !ok {
					require.Empty(t, got, "%s declined after visiting", rd.name)
					continue
				}
				answered[rd.name]++
				what := []any{"%s: room %s from %+v, page %d, %d bytes", rd.name, r, st, k, maxBytes}
				require.LessOrEqual(t, len(got), len(want), what...)
				for i, m := range got {
					w := want[i]
					require.Equal(t, w.Sequence, m.Seq, what...)
					require.Equal(t, w.Data, m.Data, what...)
					require.True(t, w.Time.Equal(m.At), "%s: seq %d stored at %s, read as %s", rd.name, m.Seq, w.Time, m.At)
				}
				switch {
				case len(want) > k && len(got) == k:
					require.Equal(t, cutLimit, res.cut, what...)
				case len(got) == len(want):
					// The end of the room. A batched index read whose last
					// messages were removed stops as its byte cap would
					// (the known imprecision tailFixture.check allows).
					require.Contains(t, []cut{cutNone, cutBytes}, res.cut, what...)
				default:
					require.True(t, small, "%s: %d of %d messages with the whole budget (%s)", rd.name, len(got), len(want), res.cut)
					require.Equal(t, cutBytes, res.cut, what...)
				}
			}
		}
	})
	t.Logf("answered: %v", answered)
	for _, rd := range f.svc.allReaders() {
		require.Positive(t, answered[rd.name], rd.name)
	}
}

// TestIndexBehindTheCursor: the index has shown only a room's first
// messages (its feed lags the stream) and a read starts after what it
// knows. The newer messages are read from the start, not from the index's
// last entry: the messages between the two come before the cursor (by
// sequence or by store time) and are not the answer. Both ways of reading
// the newer ones: the walk (one replica) and the leader (replicated).
func TestIndexBehindTheCursor(t *testing.T) {
	f := startSync(t, proto.StoreConfig{}, func(c *Config) { c.TailMessages = -1 })
	tasks := room(t, "board-lag-tasks")
	subject := f.cfg.Store.Subjects.Publish(tasks)
	ctx := context.Background()
	msgs := f.publishCreates(t, tasks, 6)
	x := newIndex(16, 16, 0, 0)
	observeAll(x, subject, msgs[:2])
	leader := newLeaderGetter(f.nc, proto.StreamRooms)
	walk := newWalkReader(f.nc, proto.StreamRooms)
	for _, rd := range []namedReader{{"index", indexReader{index: x, walk: walk}}, {"index-leader", indexReader{index: x, walk: walk, leader: &leader}}} {
		for _, c := range []struct {
			name  string
			start start
			want  []*jetstream.RawStreamMsg
		}{
			{"after a sequence", start{afterSeq: msgs[3].Sequence}, msgs[4:]},
			{"from a store time", start{byTime: true, at: msgs[3].Time}, msgs[3:]},
		} {
			rq := readRequest{subject: subject, start: c.start, want: 10,
				budget: budget{maxScan: 100, maxBytes: 1 << 20, deadline: time.Now().Add(10 * time.Second)}}
			var got []uint64
			res, ok, err := rd.read(ctx, rq, func(m stored) bool { got = append(got, m.Seq); return true })
			require.NoError(t, err)
			require.True(t, ok, "the index reaches back")
			require.Equal(t, cutNone, res.cut)
			var want []uint64
			for _, m := range c.want {
				want = append(want, m.Sequence)
			}
			require.Equal(t, want, got, "%s, %s", rd.name, c.name)
		}
	}
}
