package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/proto/directget"
)

// leaderGetter gets single messages through the JetStream API
// ($JS.API.STREAM.MSG.GET.<stream>), which only the stream's leader answers:
// what it says is the stream's state, where a direct get may be answered by
// a follower that lags. The index reads of a replicated stream use it to
// settle what a follower's answer leaves open: a sequence it says is not
// there, and whether the room has messages newer than the index knows.
type leaderGetter struct {
	nc      *nats.Conn
	subject string // $JS.API.STREAM.MSG.GET.<stream>
}

func newLeaderGetter(nc *nats.Conn, stream string) leaderGetter {
	return leaderGetter{nc: nc, subject: proto.MsgGetSubject(stream)}
}

// msgGetResponse is the API's answer: the message, or an error (404 when
// there is no such message).
type msgGetResponse struct {
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Data    []byte    `json:"data"` // base64 in JSON
		Time    time.Time `json:"time"`
	} `json:"message"`
	Error *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

// leaderAgain is how long get first waits for the leader's answer before
// it asks again (then twice as long each time: a leader slow under load is
// not asked more and more). The leader answers in milliseconds; while the
// stream has none (the seconds after its leader's server stopped, until
// another is elected) the API drops the request, so one request waited the
// read's whole time (2 s, the gateway's own wait) even when a leader was
// elected meanwhile.
const leaderAgain = 250 * time.Millisecond

// get returns the message at seq when next is "", else the first message of
// subject next at or after seq; found is false when there is none. It asks
// until the leader answers or ctx ends.
func (l leaderGetter) get(ctx context.Context, seq uint64, next string) (msg stored, subject string, found bool, err error) {
	req := directget.Request{Seq: seq, NextBySubject: next}.AppendJSON(nil)
	var m *nats.Msg
	for wait := leaderAgain; ; wait *= 2 {
		actx, cancel := context.WithTimeout(ctx, wait)
		m, err = l.nc.RequestWithContext(actx, l.subject, req)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			break
		}
	}
	if err != nil {
		return stored{}, "", false, fmt.Errorf("get %d from the stream leader: %w", seq, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return stored{}, "", false, fmt.Errorf("get %d from the stream leader: %w", seq, err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return stored{}, "", false, nil
	case resp.Error != nil:
		return stored{}, "", false, fmt.Errorf("get %d from the stream leader: %d %s", seq, resp.Error.Code, resp.Error.Description)
	case resp.Message == nil:
		return stored{}, "", false, fmt.Errorf("get %d from the stream leader: empty answer", seq)
	}
	return stored{Seq: resp.Message.Seq, Data: resp.Message.Data, At: resp.Message.Time}, resp.Message.Subject, true, nil
}

// readAfter visits subject's messages after seq stored at notBefore or
// later (the zero time: all), one request each, until there is none (the
// usual case: the first answer is 404), visit refuses one or the budget
// runs out. Messages stored before notBefore are passed over, not counted.
func (l leaderGetter) readAfter(ctx context.Context, subject string, seq uint64, notBefore time.Time, b budget, visit func(stored) bool) (readResult, error) {
	var res readResult
	ctx, cancel := context.WithDeadline(ctx, b.deadline)
	defer cancel()
	for {
		if res.cut = b.spent(res.scanned, res.bytes, false); res.cut != cutNone {
			return res, nil
		}
		m, subj, found, err := l.get(ctx, seq+1, subject)
		if err != nil {
			if ctx.Err() != nil {
				res.cut = cutTime
				return res, nil
			}
			return res, err
		}
		if !found {
			return res, nil
		}
		if subj != subject || m.Seq <= seq {
			return res, fmt.Errorf("read %s: the stream leader answered %s %d after %d", subject, subj, m.Seq, seq)
		}
		if m.At.Before(notBefore) {
			seq = m.Seq
			continue
		}
		if !visit(m) {
			res.cut = cutLimit
			return res, nil
		}
		res.scanned++
		res.bytes += len(m.Data)
		seq = m.Seq
	}
}
