package proto

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Headers a micro service sets on an error reply (nats.go micro's names).
// roomcast's services put a Code in HeaderErrorCode and the message in
// HeaderError.
const (
	HeaderErrorCode = "Nats-Service-Error-Code"
	HeaderError     = "Nats-Service-Error"
	// HeaderRetryAfterMs carries an Error's RetryAfterMs (roomcast's own).
	HeaderRetryAfterMs = "Roomcast-Retry-After-Ms"
)

// ReplyError is the *Error a service reply carries in its headers, nil if it
// carries none. A code that is not one of Codes becomes CodeInternal.
func ReplyError(m *nats.Msg) *Error {
	if m == nil || m.Header == nil {
		return nil
	}
	code := m.Header.Get(HeaderErrorCode)
	if code == "" {
		return nil
	}
	c := Code(code)
	known := false
	for _, k := range Codes {
		known = known || k == c
	}
	if !known {
		c = CodeInternal
	}
	e := &Error{Code: c, Message: m.Header.Get(HeaderError)}
	if ms, err := strconv.ParseInt(m.Header.Get(HeaderRetryAfterMs), 10, 64); err == nil && ms > 0 && c == CodeRateLimited {
		e.RetryAfterMs = ms
	}
	return e
}

// noResponders is Request's error when no service listens on the subject:
// an *Error (unavailable), which errors.Is also matches with
// nats.ErrNoResponders, so a caller can tell a missing service from a slow
// one.
type noResponders struct{ err *Error }

func (e noResponders) Error() string   { return e.err.Error() }
func (e noResponders) Unwrap() []error { return []error{e.err, nats.ErrNoResponders} }

// Request sends args as JSON to subject and decodes the reply into result
// (which may be nil to ignore it). It returns an *Error: the service's own,
// CodeUnavailable when nobody answers or ctx ends first, CodeInternal for a
// reply that does not decode.
func Request(ctx context.Context, nc *nats.Conn, subject string, args, result any) error {
	data, err := json.Marshal(args)
	if err != nil {
		return Errorf(CodeInternal, "encode %s request: %v", subject, err)
	}
	m, err := nc.RequestWithContext(ctx, subject, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return noResponders{Errorf(CodeUnavailable, "%s: no service is answering", subject)}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.Canceled):
		return Errorf(CodeUnavailable, "%s: no answer in time", subject)
	case err != nil:
		return Errorf(CodeUnavailable, "%s: %v", subject, err)
	}
	if e := ReplyError(m); e != nil {
		return e
	}
	if result == nil {
		return nil
	}
	if raw, ok := result.(*json.RawMessage); ok {
		// Passed on as it is (Ack.AppendJSON): checked once, not decoded
		// into a copy.
		if !json.Valid(m.Data) {
			return Errorf(CodeInternal, "%s: reply is not JSON", subject)
		}
		*raw = m.Data
		return nil
	}
	if err := json.Unmarshal(m.Data, result); err != nil {
		return Errorf(CodeInternal, "%s: reply does not decode: %v", subject, err)
	}
	return nil
}

// Respond answers a request whose reply subject is reply: with res as JSON,
// or, when perr is set, with an empty body and perr in the error headers that
// ReplyError reads (those of nats.go micro). Unlike a micro.Request, which
// must not be used once its handler has returned, it is safe from any
// goroutine, so a service may answer requests concurrently.
func Respond(nc *nats.Conn, reply string, res any, perr *Error) error {
	m := nats.NewMsg(reply)
	if perr != nil {
		m.Header.Set(HeaderErrorCode, string(perr.Code))
		m.Header.Set(HeaderError, perr.Message)
		if perr.RetryAfterMs > 0 {
			m.Header.Set(HeaderRetryAfterMs, strconv.FormatInt(perr.RetryAfterMs, 10))
		}
		return nc.PublishMsg(m)
	}
	data, err := json.Marshal(res)
	if err != nil {
		m.Header.Set(HeaderErrorCode, string(CodeInternal))
		m.Header.Set(HeaderError, "reply does not encode")
		_ = nc.PublishMsg(m)
		return err
	}
	m.Data = data
	return nc.PublishMsg(m)
}
