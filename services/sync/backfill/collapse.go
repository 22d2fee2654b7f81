package backfill

import (
	"encoding/json"
	"fmt"
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

// envelopeHead is the part of an envelope the sync service looks at. Decoding
// only these fields skips copying data and diff, which may be large.
type envelopeHead struct {
	Event     proto.Event `json:"event"`
	ID        string      `json:"id"`
	UpdatedAt int64       `json:"updatedAt"`
}

// parseRecord reads what the sync service needs from a stored envelope. It
// checks what proto.Envelope.Validate checks about those fields; a message
// that fails was not published through a roomcast publisher and is skipped.
func parseRecord(seq uint64, data []byte) (record, error) {
	var h envelopeHead
	if err := json.Unmarshal(data, &h); err != nil {
		return record{}, fmt.Errorf("message %d: envelope: %w", seq, err)
	}
	switch {
	case !h.Event.Known():
		return record{}, fmt.Errorf("message %d: unknown event %q", seq, h.Event)
	case h.ID == "" || len(h.ID) > proto.MaxResourceIDLen:
		return record{}, fmt.Errorf("message %d: %s: bad resource id", seq, h.Event)
	case h.UpdatedAt <= 0:
		return record{}, fmt.Errorf("message %d: %s %s: updatedAt %d", seq, h.Event, h.ID, h.UpdatedAt)
	}
	return record{Seq: seq, ID: h.ID, UpdatedAt: h.UpdatedAt, Deleted: h.Event.Op() == proto.OpDelete}, nil
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

// collapse is the pure form of the collapsing: it folds records (in stream
// order) with the since filter and limit, and returns the changes and how
// many records it folded. When folded < len(records) the answer was cut and
// continues after records[folded-1].Seq.
func collapse(records []record, since *int64, limit int) (changes []proto.Change, folded int) {
	c := newCollapser(since, limit)
	for _, r := range records {
		if !c.add(r) {
			break
		}
		folded++
	}
	return c.changes(), folded
}
