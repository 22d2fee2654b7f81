package directget

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// FuzzAppendJSON: the hand-built request decodes to what was asked, as
// json.Marshal's would.
func FuzzAppendJSON(f *testing.F) {
	f.Add(uint64(1), "rooms.board.b1.tasks", 3, 100, false, false)
	f.Add(uint64(0), "", 0, 0, true, false)
	f.Add(uint64(7), "a\"b<c>\u00e9\x01", 512, 1<<20, true, true)
	f.Fuzz(func(t *testing.T, seq uint64, subject string, batch, maxBytes int, noHdr, withTime bool) {
		r := Request{Seq: seq, NextBySubject: subject, Batch: batch, MaxBytes: maxBytes, NoHeaders: noHdr}
		if withTime {
			at := time.Unix(1700000000, 123).UTC()
			r.StartTime = &at
		}
		var got Request
		if err := json.Unmarshal(r.AppendJSON(nil), &got); err != nil {
			t.Fatalf("%s: %v", r.AppendJSON(nil), err)
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var w Request
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if g, w := mustJSON(t, got), mustJSON(t, w); g != w {
			t.Fatalf("AppendJSON gives %s, json.Marshal %s", g, w)
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func reply(seq, last uint64, status string, pending int) *nats.Msg {
	m := nats.NewMsg("_INBOX.x")
	if status != "" {
		m.Header.Set(HeaderStatus, status)
		m.Header.Set(HeaderNumPending, strconv.Itoa(pending))
	} else {
		m.Header.Set(jetstream.SequenceHeader, strconv.FormatUint(seq, 10))
	}
	m.Header.Set(jetstream.LastSequenceHeader, strconv.FormatUint(last, 10))
	return m
}

// TestBatchChain: a batch's replies are taken while each names the one
// before it; a missing one is ErrLost wherever it was, and the statuses
// say what they say. The reads against a server are in sync's and
// roomstate's tests.
func TestBatchChain(t *testing.T) {
	var b Batch
	for _, m := range []*nats.Msg{reply(3, 0, "", 0), reply(9, 3, "", 0)} {
		if _, err := b.Take(m); err != nil {
			t.Fatal(err)
		}
	}
	r, err := b.Take(reply(0, 9, StatusEndOfBatch, 4))
	if err != nil || !r.Done || r.Pending != 4 || b.Last() != 9 {
		t.Fatalf("end of batch: %+v, %v", r, err)
	}
	lost := []struct {
		name    string
		replies []*nats.Msg
	}{
		{"the first message", []*nats.Msg{reply(9, 3, "", 0)}},
		{"a middle message", []*nats.Msg{reply(3, 0, "", 0), reply(12, 9, "", 0)}},
		{"the last message", []*nats.Msg{reply(3, 0, "", 0), reply(0, 9, StatusEndOfBatch, 0)}},
		{"a not found after messages", []*nats.Msg{reply(3, 0, "", 0), reply(0, 0, StatusNotFound, 0)}},
	}
	for _, c := range lost {
		var b Batch
		var err error
		for _, m := range c.replies {
			if _, err = b.Take(m); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrLost) {
			t.Errorf("%s: %v, want ErrLost", c.name, err)
		}
	}
	if r, err := new(Batch).Take(reply(0, 0, StatusNotFound, 0)); err != nil || !r.Done {
		t.Errorf("not found: %+v, %v", r, err)
	}
	if _, err := new(Batch).Take(reply(0, 0, StatusNoResponders, 0)); !errors.Is(err, ErrNoResponders) {
		t.Errorf("503: %v", err)
	}
	var se *StatusError
	if _, err := new(Batch).Take(reply(0, 0, "413", 0)); !errors.As(err, &se) || se.Status != "413" {
		t.Errorf("413: %v", err)
	}
	// A publisher's own Nats-Sequence comes first; the server's wins.
	m := reply(5, 0, "", 0)
	m.Header[jetstream.SequenceHeader] = append([]string{"99"}, m.Header[jetstream.SequenceHeader]...)
	if r, err := new(Batch).Take(m); err != nil || r.Seq != 5 {
		t.Errorf("spoofed sequence: %+v, %v", r, err)
	}
}
