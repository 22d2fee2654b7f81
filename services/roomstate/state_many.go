package roomstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// A getmany of a reconnect storm names up to proto.MaxBatchRooms rooms: read
// one by one, that is as many KV gets, each a request through the NATS
// server, queued behind everything else the storm has the process do
// (batches of 1,000 took 60 ms to over a second). One batched direct get
// with multi_last asks the bucket's stream for the latest value of every key
// at once: one request, the values, then an end-of-batch status.

// maxMultiLast is how many subjects nats-server answers in one multi_last
// request (more is refused as "too many results").
const maxMultiLast = 1024

// errNoMultiGet says the batched read could not answer; the caller reads
// key by key.
var errNoMultiGet = errors.New("batched direct get unavailable")

// multiFirstReply bounds the wait for a batched read's first reply. None
// means the request went nowhere: a role without publish permission on
// the bare $JS.API.DIRECT.GET.<stream> subject is refused silently, as far
// as the request goes. Batched reads are then given up for good (logged
// once): key by key is slower, not wrong.
const multiFirstReply = 2 * time.Second

// Headers and statuses of a batched direct get's replies.
const (
	hdrStatus      = "Status"
	hdrNumPending  = "Nats-Num-Pending"
	hdrKVOperation = "KV-Operation"
	statusEOB      = "204" // end of batch
	statusNone     = "404" // none of the subjects has a message
)

// GetMany reads the states of rooms (names as stored: no client rooms) in
// one batched direct get; states[i] is rooms[i]'s, nil when it has none.
// errNoMultiGet when the batched read cannot answer (no connection for it,
// too many rooms, direct gets off, a reply lost): then nothing is known and
// the caller reads key by key.
func (s *stateStore) GetMany(ctx context.Context, rooms []string) ([]*proto.RoomState, error) {
	if s.nc == nil || s.multiOff.Load() || len(rooms) == 0 || len(rooms) > maxMultiLast {
		return nil, errNoMultiGet
	}
	bucket := s.kv.Bucket()
	prefix := "$KV." + bucket + "."
	at := make(map[string][]int, len(rooms)) // subject → positions in rooms
	subjects := make([]string, 0, len(rooms))
	for i, r := range rooms {
		subj := prefix + r
		if _, seen := at[subj]; !seen {
			subjects = append(subjects, subj)
		}
		at[subj] = append(at[subj], i)
	}
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		Batch     int      `json:"batch"`
	}{subjects, len(subjects)})
	if err != nil {
		return nil, err
	}
	inbox := s.nc.NewInbox()
	replies := make(chan *nats.Msg, len(subjects)+1)
	sub, err := s.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, fmt.Errorf("%w: subscribe: %v", errNoMultiGet, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := s.nc.PublishRequest(jetstream.DefaultAPIPrefix+"DIRECT.GET.KV_"+bucket, inbox, req); err != nil {
		return nil, fmt.Errorf("%w: %v", errNoMultiGet, err)
	}
	states := make([]*proto.RoomState, len(rooms))
	prev := "0" // each reply names the sequence of the one before it
	first := time.NewTimer(multiFirstReply)
	defer first.Stop()
	for got := false; ; got = true {
		var m *nats.Msg
		select {
		case m = <-replies:
		case <-first.C:
			if got {
				continue
			}
			s.multiOff.Store(true)
			s.log.Warn().Str("subject", jetstream.DefaultAPIPrefix+"DIRECT.GET.KV_"+bucket).Dur("waited", multiFirstReply).
				Msg("a batched read of room states got no answer (is publishing to this subject allowed?): reading key by key from now on")
			return nil, errNoMultiGet
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		switch status := m.Header.Get(hdrStatus); status {
		case "":
		case statusEOB:
			if m.Header.Get(jetstream.LastSequenceHeader) != prev || m.Header.Get(hdrNumPending) != "0" {
				return nil, fmt.Errorf("%w: a reply was lost or the batch was cut", errNoMultiGet)
			}
			return states, nil
		case statusNone:
			if prev != "0" {
				return nil, fmt.Errorf("%w: no results after a result", errNoMultiGet)
			}
			return states, nil
		default: // 503 no responders (direct gets off), 413, 408…
			return nil, fmt.Errorf("%w: status %s %s", errNoMultiGet, status, m.Header.Get("Description"))
		}
		if m.Header.Get(jetstream.LastSequenceHeader) != prev {
			return nil, fmt.Errorf("%w: a reply was lost", errNoMultiGet)
		}
		prev = m.Header.Get(jetstream.SequenceHeader)
		subj := m.Header.Get(jetstream.SubjectHeader)
		pos, ok := at[subj]
		if !ok {
			return nil, fmt.Errorf("%w: a reply for %q, not asked for", errNoMultiGet, subj)
		}
		if op := m.Header.Get(hdrKVOperation); op == "DEL" || op == "PURGE" {
			continue // deleted: no state, as Get says
		}
		var st proto.RoomState
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return nil, fmt.Errorf("%w: %s %s sequence %s: %v", errBadValue, proto.BucketRoomState, subj[len(prefix):], prev, err)
		}
		for _, i := range pos {
			states[i] = &st
		}
	}
}
