package backfill

import (
	"sort"

	"github.com/roomcast/roomcast/proto"
)

// record is one stored message of a room as the sync service reads it: its
// stream sequence and the envelope fields that matter for changes and chat.
type record struct {
	Seq       uint64
	ID        string
	UpdatedAt int64
	Deleted   bool
}

// parseRecord reads what the sync service needs from a stored message of
// room, after the envelope gate the gateway and roomstate apply too
// (proto.CheckEnvelope, against the message's store time): a message the
// gate refuses was never delivered live nor folded into the room's state,
// and is no change here either. The error is then a *proto.RefusedError.
func parseRecord(room proto.Room, m stored) (record, error) {
	c, err := proto.CheckEnvelope(room, m.Data, m.At)
	if err != nil {
		return record{}, err
	}
	return record{Seq: m.Seq, ID: c.ID(), UpdatedAt: c.UpdatedAt, Deleted: c.Event.Op() == proto.OpDelete}, nil
}

// refused counts and logs a stored message the gate refused.
func (s *service) refused(room proto.Room, seq uint64, err error) {
	reason := proto.ReasonOf(err)
	s.metrics.refused.WithLabelValues(string(reason)).Inc()
	s.log.Warn().Err(err).Str("room", room.Name()).Uint64("seq", seq).Str("reason", string(reason)).Msg("refused a stored room message")
}

// collapser folds a room's records, in stream order, into one change per
// resource: the latest (highest seq) change of each, deletes included.
//
// With a since filter, a resource is reported when any of its folded changes
// has updatedAt >= since (ties kept); the entry is still its latest change.
// That way a delete whose publisher's clock lags behind since does not leave
// the resource reported as merely updated.
//
// At most limit resources are reported: the record that would add one more
// is refused, and the answer ends just before it (Last is the last folded
// sequence, the continuation point).
type collapser struct {
	since *int64
	limit int

	latest    map[string]record // every resource seen, reported or not
	reported  map[string]bool   // resources with a change at or after since
	last      uint64            // the last folded record's seq
	nReported int
}

func newCollapser(since *int64, limit int) *collapser {
	return &collapser{since: since, limit: limit, latest: map[string]record{}, reported: map[string]bool{}}
}

// add folds r in, or refuses it (false) when it would report one resource
// more than the limit. Records must come in increasing seq.
func (c *collapser) add(r record) bool {
	qualifies := c.since == nil || r.UpdatedAt >= *c.since
	if qualifies && !c.reported[r.ID] {
		if c.nReported >= c.limit {
			return false
		}
		c.reported[r.ID] = true
		c.nReported++
	}
	c.latest[r.ID] = r
	c.last = r.Seq
	return true
}

// skip notes that seq was read and is no change (an invalid message), so a
// continuation cursor moves past it.
func (c *collapser) skip(seq uint64) { c.last = seq }

// changes are the reported resources' latest changes, in stream order.
func (c *collapser) changes() []proto.Change {
	out := make([]proto.Change, 0, c.nReported)
	for id := range c.reported {
		r := c.latest[id]
		out = append(out, proto.Change{ID: r.ID, UpdatedAt: r.UpdatedAt, Deleted: r.Deleted, Seq: r.Seq})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// collapse is the pure form of a page of changes: it folds records (in
// stream order) with the since filter and limit, at most limit+1 of them
// (service.read's bound: a page reads what it may return and one more),
// and returns the changes and how many records it folded. When folded <
// len(records) the answer was cut and continues after
// records[folded-1].Seq.
func collapse(records []record, since *int64, limit int) (changes []proto.Change, folded int) {
	c := newCollapser(since, limit)
	for _, r := range records {
		if folded == pageReads(limit) || !c.add(r) {
			break
		}
		folded++
	}
	return c.changes(), folded
}
