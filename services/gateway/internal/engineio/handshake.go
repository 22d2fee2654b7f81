package engineio

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/roomcast/roomcast/services/gateway/internal/sio"
)

// Handshake is what a request must pass to open a session, the same on
// every path to it (Check), and what the session's open packet says.
type Handshake struct {
	// Origins is the allow-list of Origin headers: "*", an origin, or
	// scheme://host:* for host on any port (or none).
	Origins []string
	// Draining reports that the gateway is shutting down: new sessions
	// are refused (503) so that clients reconnect to another.
	Draining func() bool
	// OriginRefused is told of each Origin refused (a metric, a log line).
	OriginRefused func(origin, remote string)

	PingInterval, PingTimeout time.Duration
	MaxPayload                int
	// NewID makes a session id (the open packet's sid).
	NewID func() string
}

// Request is what Check reads of an opening request.
type Request struct {
	EIO, Transport string // query parameters
	SID            string // the session a polling request or an upgrade is for
	Token          string // the query's token
	Origin         string // the first non-empty Origin header
	Authorization  string // the first Authorization header
	Remote         string
}

// Refusal is a request refused before the upgrade: a plain HTTP status
// and why, in words the client's developer can act on.
type Refusal struct {
	Status int
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

// Check answers an opening request: the token it carries (a Bearer
// Authorization header wins over the query's token), or why it is refused.
// Every upgrade path asks it, so that a refusal reads the same on each.
func (h *Handshake) Check(r Request) (token string, refused *Refusal) {
	switch {
	case r.EIO != "4":
		return "", &Refusal{http.StatusBadRequest, "unsupported Engine.IO version: this server speaks EIO=4 (socket.io-client v3/v4)"}
	case r.Transport != "websocket" && r.Transport != "polling":
		return "", &Refusal{http.StatusBadRequest, "unsupported transport: websocket or polling"}
	case h.Draining != nil && h.Draining():
		return "", &Refusal{http.StatusServiceUnavailable, "gateway is shutting down: reconnect to another"}
	case r.Origin != "" && !h.originAllowed(r.Origin):
		if h.OriginRefused != nil {
			h.OriginRefused(r.Origin, r.Remote)
		}
		return "", &Refusal{http.StatusForbidden, "origin not allowed"}
	}
	token = r.Token
	if b, ok := strings.CutPrefix(r.Authorization, "Bearer "); ok {
		token = strings.TrimSpace(b)
	}
	return token, nil
}

// OpenFrame is a new WebSocket session's Engine.IO open packet, as a
// frame.
func (h *Handshake) OpenFrame() []byte { return TextFrame(h.openPacket(h.NewID(), nil)) }

// openPacket is the open packet of session sid, which may upgrade to
// upgrades.
func (h *Handshake) openPacket(sid string, upgrades []string) []byte {
	return sio.AppendOpen(nil, sio.OpenPayload{
		SID:          sid,
		Upgrades:     upgrades,
		PingInterval: h.PingInterval.Milliseconds(),
		PingTimeout:  h.PingTimeout.Milliseconds(),
		MaxPayload:   int64(h.MaxPayload),
	})
}

func (h *Handshake) originAllowed(origin string) bool {
	for _, o := range h.Origins {
		if originMatches(o, origin) {
			return true
		}
	}
	return false
}

// originMatches says whether an Origin header matches one entry of the
// allow-list: "*", the origin itself, or scheme://host:* for host on any
// port (or none). Anything else after the host (a longer host name such as
// localhost.example.com) does not match.
func originMatches(pattern, origin string) bool {
	if pattern == "*" {
		return true
	}
	base, wild := strings.CutSuffix(pattern, ":*")
	if !wild {
		return strings.EqualFold(pattern, origin)
	}
	// A host:* pattern is not an origin itself: "http://localhost:*" sent
	// as an Origin is refused like any other port that is not a number.
	if len(origin) < len(base) || !strings.EqualFold(origin[:len(base)], base) {
		return false
	}
	port := origin[len(base):]
	if port == "" {
		return true
	}
	port, ok := strings.CutPrefix(port, ":")
	if !ok || port == "" || len(port) > 5 {
		return false
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	return true
}

// queryOf is the query string of a request URI.
func queryOf(uri []byte) []byte {
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		return uri[i+1:]
	}
	return nil
}

// queryValue is the first value of key in query q, unescaped, as
// url.Values.Get would say ("" when absent or malformed).
func queryValue(q []byte, key string) string {
	for len(q) > 0 {
		var pair []byte
		pair, q, _ = bytes.Cut(q, []byte("&"))
		k, v, _ := bytes.Cut(pair, []byte("="))
		if bytes.ContainsAny(k, "%+") {
			uk, err := url.QueryUnescape(string(k))
			if err != nil || uk != key {
				continue
			}
		} else if string(k) != key {
			continue
		}
		if !bytes.ContainsAny(v, "%+") {
			return string(v)
		}
		uv, err := url.QueryUnescape(string(v))
		if err != nil {
			continue
		}
		return uv
	}
	return ""
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
