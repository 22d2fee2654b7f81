// Package directget speaks nats-server's batched direct get (2.11+), which
// sync and roomstate both use: the request, and its replies, checked so that
// an answer that lost a reply on the way is told from a complete one.
//
// A batched request (batch > 0, with next_by_subj or multi_last) is answered
// with the messages, each carrying Nats-Last-Sequence: the sequence of the
// message sent before it in the same batch (0 for the first); then an
// end-of-batch status (204) whose Nats-Last-Sequence is the last message sent
// and whose Nats-Num-Pending is how many matching messages the batch did not
// send. Nothing at or after the start is a 404; direct gets off (or no such
// stream), a 503. The replies of one request come over one connection in
// order, so a reply lost on the way shows as a break in that chain
// (ErrLost): the caller stops before the hole.
//
// Not github.com/synadia-io/orbit.go/jetstreamext (GetBatch,
// GetLastMsgsFor): it reads until the end-of-batch status without checking
// the chain or the status's last sequence, so a lost reply goes unseen; it
// reads headers with Header.Get, whose first value a publisher can forge
// (proto.StreamHeader); and it has no no_hdr or pipelining, which sync's
// index reads need.
package directget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// Request is nats-server's JSApiMsgGetRequest, the fields roomcast uses.
type Request struct {
	Seq           uint64     `json:"seq,omitempty"`
	NextBySubject string     `json:"next_by_subj,omitempty"`
	MultiLast     []string   `json:"multi_last,omitempty"`
	Batch         int        `json:"batch,omitempty"`
	MaxBytes      int        `json:"max_bytes,omitempty"`
	StartTime     *time.Time `json:"start_time,omitempty"`
	// UpToSeq, with MultiLast: the last message of each subject at or
	// before this sequence.
	UpToSeq uint64 `json:"up_to_seq,omitempty"`
	// NoHeaders asks for the messages without their headers: the server
	// spares building them and the client parsing them, the larger part of
	// a small message's cost. The caller must then know which message each
	// reply is; statuses keep their headers.
	NoHeaders bool `json:"no_hdr,omitempty"`
}

// AppendJSON appends r as JSON to b: what json.Marshal gives, without its
// reflection for the usual request (sync's index reads send one per run of
// messages).
func (r Request) AppendJSON(b []byte) []byte {
	if len(r.MultiLast) > 0 || r.StartTime != nil || r.UpToSeq != 0 || !plain(r.NextBySubject) {
		j, err := json.Marshal(r)
		if err != nil {
			panic(err) // strings, numbers and a time: cannot fail
		}
		return append(b, j...)
	}
	b = append(b, '{')
	sep := func() {
		if b[len(b)-1] != '{' {
			b = append(b, ',')
		}
	}
	if r.Seq != 0 {
		b = strconv.AppendUint(append(b, `"seq":`...), r.Seq, 10)
	}
	if r.NextBySubject != "" {
		sep()
		b = append(append(append(b, `"next_by_subj":"`...), r.NextBySubject...), '"')
	}
	if r.Batch != 0 {
		sep()
		b = strconv.AppendInt(append(b, `"batch":`...), int64(r.Batch), 10)
	}
	if r.MaxBytes != 0 {
		sep()
		b = strconv.AppendInt(append(b, `"max_bytes":`...), int64(r.MaxBytes), 10)
	}
	if r.NoHeaders {
		sep()
		b = append(b, `"no_hdr":true`...)
	}
	return append(b, '}')
}

// plain says whether s needs no escaping in JSON (json.Marshal would also
// escape <, > and &).
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// Reply headers and statuses.
const (
	HeaderStatus      = "Status"
	HeaderDescription = "Description"
	HeaderNumPending  = "Nats-Num-Pending"

	StatusEndOfBatch   = "204"
	StatusNotFound     = "404"
	StatusNoResponders = "503"
)

var (
	// ErrNoResponders: the stream does not answer direct gets (AllowDirect
	// off, or no such stream).
	ErrNoResponders = errors.New("direct get: no responders")
	// ErrLost: a reply of the batch did not arrive (or one came that the
	// batch cannot have sent): what came before it is good.
	ErrLost = errors.New("direct get: a reply was lost")
)

// StatusError is a reply status other than a message, the end of a batch,
// not found and no responders (408 timeout, 413 too many results…).
type StatusError struct{ Status, Description string }

func (e *StatusError) Error() string {
	return fmt.Sprintf("direct get: status %s %s", e.Status, e.Description)
}

// Status classifies reply m: "" for a message, StatusEndOfBatch,
// StatusNotFound; any other status is an error.
func Status(m *nats.Msg) (string, error) {
	switch s := m.Header.Get(HeaderStatus); s {
	case "", StatusEndOfBatch, StatusNotFound:
		return s, nil
	case StatusNoResponders:
		return "", ErrNoResponders
	default:
		return "", &StatusError{Status: s, Description: m.Header.Get(HeaderDescription)}
	}
}

// Message is one stored message a reply carried.
type Message struct {
	Seq     uint64
	Subject string
	Data    []byte
	// Header is the reply's: the stored message's own headers, then the
	// server's (read those with proto.StreamHeader).
	Header nats.Header
}

// Batch follows the replies of one batched request (with headers).
type Batch struct {
	last uint64 // the sequence of the last message taken, 0 before the first
	n    int
}

// Reply is what one reply said: a message, or (Done) that the batch is over.
type Reply struct {
	Message
	Done bool
	// Pending, when Done, is how many messages the request matched that the
	// batch did not send (0: it sent them all).
	Pending uint64
}

// Last is the sequence of the last message taken, 0 before the first.
func (b *Batch) Last() uint64 { return b.last }

// Take reads the batch's next reply m. ErrLost when m does not follow the
// reply before it.
func (b *Batch) Take(m *nats.Msg) (Reply, error) {
	status, err := Status(m)
	if err != nil {
		return Reply{}, err
	}
	switch status {
	case StatusNotFound:
		if b.n > 0 {
			return Reply{}, fmt.Errorf("%w: nothing found after %d messages", ErrLost, b.n)
		}
		return Reply{Done: true}, nil
	case StatusEndOfBatch:
		if last, ok := header(m.Header, jetstream.LastSequenceHeader); !ok || last != b.last {
			return Reply{}, fmt.Errorf("%w: the batch ended at %s, %d came last", ErrLost, proto.StreamHeader(m.Header, jetstream.LastSequenceHeader), b.last)
		}
		pending, ok := header(m.Header, HeaderNumPending)
		if !ok {
			return Reply{}, fmt.Errorf("direct get: end of batch: %s %q", HeaderNumPending, proto.StreamHeader(m.Header, HeaderNumPending))
		}
		return Reply{Done: true, Pending: pending}, nil
	}
	if last, ok := header(m.Header, jetstream.LastSequenceHeader); !ok || last != b.last {
		return Reply{}, fmt.Errorf("%w: a message after %s, %d came last", ErrLost, proto.StreamHeader(m.Header, jetstream.LastSequenceHeader), b.last)
	}
	seq, ok := header(m.Header, jetstream.SequenceHeader)
	if !ok || seq <= b.last {
		return Reply{}, fmt.Errorf("direct get: %s %q after %d", jetstream.SequenceHeader, proto.StreamHeader(m.Header, jetstream.SequenceHeader), b.last)
	}
	b.last = seq
	b.n++
	return Reply{Message: Message{
		Seq:     seq,
		Subject: proto.StreamHeader(m.Header, jetstream.SubjectHeader),
		Data:    m.Data,
		Header:  m.Header,
	}}, nil
}

// header is the server's value of a number header (proto.StreamHeader).
func header(h nats.Header, key string) (uint64, bool) {
	n, err := strconv.ParseUint(proto.StreamHeader(h, key), 10, 64)
	return n, err == nil
}

// EndOfBatch reads the end-of-batch status of a batch asked with NoHeaders,
// whose messages cannot be chained: the sequence it names as the last sent.
func EndOfBatch(m *nats.Msg) (last uint64, err error) {
	last, err = strconv.ParseUint(proto.StreamHeader(m.Header, jetstream.LastSequenceHeader), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("direct get: end of batch: %s: %w", jetstream.LastSequenceHeader, err)
	}
	return last, nil
}

// StoreTime is when the stream stored m (parsed on demand: roomstate does
// not need it).
func (m Message) StoreTime() time.Time { return StoreTime(m.Header) }

// StoreTime is the store time a reply carries (the server's
// Nats-Time-Stamp, not a copy a publisher stored); now when it has none,
// as the gateway does for a live message.
func StoreTime(h nats.Header) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, proto.StreamHeader(h, jetstream.TimeStampHeaer)); err == nil {
		return t
	}
	return time.Now()
}

// Replies is a subscription to a read's replies.
//
// Not SubscribeSync, whose channel of 65,536 pointers (512 KiB zeroed per
// request) cost more than sync's reads: a read has a known bound of replies
// in flight; more is a protocol error, seen as ErrLost.
type Replies struct {
	sub *nats.Subscription
	ch  chan *nats.Msg
}

// Subscribe subscribes to subject (an inbox, or inbox.* for pipelined
// requests) with room for size replies.
func Subscribe(nc *nats.Conn, subject string, size int) (*Replies, error) {
	ch := make(chan *nats.Msg, size)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		return nil, err
	}
	return &Replies{sub: sub, ch: ch}, nil
}

// Next is the next reply, or ctx's error.
func (r *Replies) Next(ctx context.Context) (*nats.Msg, error) {
	select {
	case m := <-r.ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close unsubscribes; replies still on the way are dropped.
func (r *Replies) Close() { _ = r.sub.Unsubscribe() }

// Subject is the subject the replies come to.
func (r *Replies) Subject() string { return r.sub.Subject }
