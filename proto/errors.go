package proto

import (
	"errors"
	"fmt"
	"time"
)

// Code is a client-visible error code, sent in a failed Ack and as the
// Nats-Service-Error-Code of a failed request to a roomcast service.
type Code string

// The error codes of the design. Each says what a client should do.
const (
	CodeInvalidArgument Code = "invalid_argument" // fix the call; retrying it as is fails again
	CodeUnauthenticated Code = "unauthenticated"  // get a fresh token and reconnect
	CodeForbidden       Code = "forbidden"        // the user may not do this
	CodeNotFound        Code = "not_found"        // no such room or resource
	CodeRateLimited     Code = "rate_limited"     // too many calls: back off, then retry
	CodeUnavailable     Code = "unavailable"      // a dependency did not answer: retry later
	CodeInternal        Code = "internal"         // a bug or an unexpected failure
)

// Codes lists every code.
var Codes = []Code{
	CodeInvalidArgument, CodeUnauthenticated, CodeForbidden, CodeNotFound,
	CodeRateLimited, CodeUnavailable, CodeInternal,
}

// Error is an error a client may see. RetryAfterMs, set with
// CodeRateLimited, says how long to wait before the retry can succeed (ms):
// the time until the budget that refused the call has room again.
type Error struct {
	Code         Code   `json:"code"`
	Message      string `json:"message"`
	RetryAfterMs int64  `json:"retryAfterMs,omitempty"`
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// RateLimited is a CodeRateLimited error with a retry hint: after, rounded
// up to a whole millisecond (at least 1).
func RateLimited(after time.Duration, format string, args ...any) *Error {
	ms := int64((after + time.Millisecond - 1) / time.Millisecond)
	return &Error{Code: CodeRateLimited, Message: fmt.Sprintf(format, args...), RetryAfterMs: max(ms, 1)}
}

// CodeOf is err's code: its own if it wraps an *Error, CodeInternal otherwise.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}
