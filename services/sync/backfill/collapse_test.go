package backfill

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func ptr[T any](v T) *T { return &v }

func TestCollapse(t *testing.T) {
	up := func(seq uint64, id string, at int64) record { return record{Seq: seq, ID: id, UpdatedAt: at} }
	del := func(seq uint64, id string, at int64) record {
		return record{Seq: seq, ID: id, UpdatedAt: at, Deleted: true}
	}
	tests := []struct {
		name    string
		records []record
		since   *int64
		want    []proto.Change
	}{
		{
			name:    "many changes per resource keep the latest",
			records: []record{up(1, "a", 10), up(2, "b", 11), up(3, "a", 12), up(4, "a", 13), up(5, "b", 14)},
			want:    []proto.Change{{ID: "a", UpdatedAt: 13, Seq: 4}, {ID: "b", UpdatedAt: 14, Seq: 5}},
		},
		{
			name:    "delete after update",
			records: []record{up(1, "a", 10), up(2, "a", 11), del(3, "a", 12)},
			want:    []proto.Change{{ID: "a", UpdatedAt: 12, Deleted: true, Seq: 3}},
		},
		{
			name:    "update after delete is a re-creation",
			records: []record{up(1, "a", 10), del(2, "a", 11), up(3, "a", 12)},
			want:    []proto.Change{{ID: "a", UpdatedAt: 12, Seq: 3}},
		},
		{
			name:    "ties on updatedAt with since are kept",
			records: []record{up(1, "a", 99), up(2, "b", 100), up(3, "c", 100)},
			since:   ptr[int64](100),
			want:    []proto.Change{{ID: "b", UpdatedAt: 100, Seq: 2}, {ID: "c", UpdatedAt: 100, Seq: 3}},
		},
		{
			name:    "ties between changes of one resource: the later in the stream wins",
			records: []record{up(1, "a", 100), del(2, "a", 100)},
			want:    []proto.Change{{ID: "a", UpdatedAt: 100, Deleted: true, Seq: 2}},
		},
		{
			name: "skewed clocks: stream order decides, not updatedAt",
			// b's second publisher runs 50 ms behind the first.
			records: []record{up(1, "b", 150), up(2, "b", 100)},
			want:    []proto.Change{{ID: "b", UpdatedAt: 100, Seq: 2}},
		},
		{
			name: "skewed clocks: a lagging delete of a resource changed since is reported as a delete",
			// a changed after since, then a publisher whose clock lags
			// deleted it with an older timestamp.
			records: []record{up(1, "a", 120), del(2, "a", 90)},
			since:   ptr[int64](100),
			want:    []proto.Change{{ID: "a", UpdatedAt: 90, Deleted: true, Seq: 2}},
		},
		{
			name: "skewed clocks: read only for the margin, before since, not reported",
			// x's changes are older than since: read because the scan starts
			// at since minus the margin.
			records: []record{up(1, "x", 50), del(2, "x", 60), up(3, "y", 101)},
			since:   ptr[int64](100),
			want:    []proto.Change{{ID: "y", UpdatedAt: 101, Seq: 3}},
		},
		{
			name:    "nothing",
			records: nil,
			want:    []proto.Change{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, folded := collapse(tt.records, tt.since, 1000)
			require.Equal(t, tt.want, got)
			require.Equal(t, len(tt.records), folded)
		})
	}
}

func TestCollapseLimitCutsBeforeTheNextResource(t *testing.T) {
	recs := []record{
		{Seq: 1, ID: "a", UpdatedAt: 1}, {Seq: 2, ID: "b", UpdatedAt: 2},
		{Seq: 3, ID: "a", UpdatedAt: 3}, // a again: no new entry, folded
		{Seq: 4, ID: "c", UpdatedAt: 4}, // would be the third: refused
		{Seq: 5, ID: "a", UpdatedAt: 5},
	}
	got, folded := collapse(recs, nil, 2)
	require.Equal(t, 3, folded)
	require.Equal(t, []proto.Change{{ID: "b", UpdatedAt: 2, Seq: 2}, {ID: "a", UpdatedAt: 3, Seq: 3}}, got)

	// A resource older than since does not take a slot.
	got, folded = collapse([]record{{Seq: 1, ID: "old", UpdatedAt: 1}, {Seq: 2, ID: "new", UpdatedAt: 10}}, ptr[int64](5), 1)
	require.Equal(t, 2, folded)
	require.Equal(t, []proto.Change{{ID: "new", UpdatedAt: 10, Seq: 2}}, got)
}

// TestCollapsePagination pages through random histories the way clients do
// (the first page with since, the rest after the previous page's last
// sequence) and checks that pages neither skip nor repeat a record, respect
// the limit, and, applied in order, give the state a single unlimited answer
// gives.
func TestCollapsePagination(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 300; round++ {
		n := rng.IntN(60)
		ids := 1 + rng.IntN(12)
		recs := make([]record, n)
		for i := range recs {
			recs[i] = record{
				Seq:       uint64(i + 1), // re-numbered with gaps below
				ID:        fmt.Sprintf("r%d", rng.IntN(ids)),
				UpdatedAt: int64(100 + i*10 + rng.IntN(41) - 20), // ±20 ms skew
				Deleted:   rng.IntN(4) == 0,
			}
		}
		// Other rooms' messages leave gaps in a room's sequences.
		var seq uint64
		for i := range recs {
			seq += 1 + uint64(rng.IntN(3))
			recs[i].Seq = seq
		}
		var since *int64
		if rng.IntN(2) == 0 {
			since = ptr(int64(100 + rng.IntN(n*10+1)))
		}
		limit := 1 + rng.IntN(5)

		want, _ := collapse(recs, since, len(recs)+1)
		state := map[string]proto.Change{}
		rest, first, pageSince := recs, true, since
		seen := []uint64{}
		for pages := 0; ; pages++ {
			require.Less(t, pages, len(recs)+2, "pagination does not progress")
			page, folded := collapse(rest, pageSince, limit)
			require.LessOrEqual(t, len(page), limit)
			for _, c := range page {
				state[c.ID] = c
			}
			for _, r := range rest[:folded] {
				seen = append(seen, r.Seq)
			}
			if folded == len(rest) {
				break
			}
			require.Positive(t, folded, "a page must fold at least one record")
			// The continuation cursor is afterSeq = the last folded seq.
			after := rest[folded-1].Seq
			i := 0
			for i < len(rest) && rest[i].Seq <= after {
				i++
			}
			rest = rest[i:]
			if first {
				first, pageSince = false, nil
			}
		}
		all := make([]uint64, len(recs))
		for i, r := range recs {
			all[i] = r.Seq
		}
		require.Equal(t, all, seen, "round %d: every record is folded exactly once", round)
		for _, c := range want {
			require.Equal(t, c, state[c.ID], "round %d: resource %s", round, c.ID)
		}
		// Later pages may report resources the single answer filters out
		// (changes before since, read after page one): more, never less,
		// and each is the resource's true latest change.
		for id, c := range state {
			last := record{}
			for _, r := range recs {
				if r.ID == id {
					last = r
				}
			}
			require.Equal(t, proto.Change{ID: id, UpdatedAt: last.UpdatedAt, Deleted: last.Deleted, Seq: last.Seq}, c)
		}
	}
}

func TestParseRecord(t *testing.T) {
	tasks := room(t, "board-b1-tasks")
	at := time.UnixMilli(1000)
	r, err := parseRecord(tasks, stored{Seq: 7, Data: []byte(`{"event":"delete-task","id":"t1","updatedAt":5}`), At: at})
	require.NoError(t, err)
	require.Equal(t, record{Seq: 7, ID: "t1", UpdatedAt: 5, Deleted: true}, r)
	r, err = parseRecord(tasks, stored{Seq: 8, Data: []byte(`{"event":"update-task","id":"t1","updatedAt":6,"diff":{"a":1}}`), At: at})
	require.NoError(t, err)
	require.False(t, r.Deleted)
	for _, bad := range []string{``, `[]`, `{"event":"nope","id":"t","updatedAt":1}`, `{"event":"update-task","updatedAt":1}`, `{"event":"update-task","id":"t"}`,
		`{"event":"update-board","id":"t","updatedAt":1,"diff":{}}`, `{"event":"delete-task","id":"t1","updatedAt":99999999}`} {
		_, err := parseRecord(tasks, stored{Seq: 1, Data: []byte(bad), At: at})
		require.NotEmpty(t, proto.ReasonOf(err), bad)
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"event":"update-task","id":"t1","updatedAt":6,"diff":{"a":1}}`))
	f.Add([]byte(`{"event":"delete-task","id":"t1","updatedAt":5}`))
	tasks, err := proto.BoardTasksRoom("b1")
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRecord(tasks, stored{Seq: 1, Data: b, At: time.Now()})
		if err != nil {
			return
		}
		require.NotEmpty(t, r.ID)
		require.Positive(t, r.UpdatedAt)
	})
}
