// Package sioclient is a lean Socket.IO client (Engine.IO v4, Socket.IO v5,
// WebSocket or long-polling, namespace "/"): what the load tool's sockets and the
// failure tests need, and no more.
package sioclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/gobwas/ws"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/wsclient"
)

// It is lean on purpose, since thousands of them share a process and the tool's
// own CPU competes with the server's: one goroutine owns a socket and does
// every read and write on it (pongs included, so writes never interleave;
// the WebSocket underneath is wsclient's), no JSON decoding of broadcasts.

var (
	ErrRefused = errors.New("connect refused")
	ErrClosed  = wsclient.ErrClosed
)

// Conn is one connected, authenticated socket.
type Conn struct {
	ws    wsclient.Conn
	poll  *polling // non-nil: the socket long-polls instead
	ackID int
	SID   string // Socket.IO socket id from the CONNECT reply
	Pings int    // server pings answered, for tests

	// Connection state recovery, as socket.io-client ≥ 4.6 keeps it.
	PID       string // the session's pid from the CONNECT reply; "": the server offers no recovery
	Recovered bool   // the reply's pid is the one the CONNECT presented: the server restored the session
	// offset is the last event's offset (its last argument, when a string),
	// kept once the server gave a pid; a buffer reused from event to event,
	// so that tracking it allocates nothing per broadcast.
	offset []byte
}

// Options say where and how a socket connects.
type Options struct {
	URL      string // ws://host:port/socket.io/?EIO=4&transport=websocket, or PollingURL's with Polling
	Polling  bool   // Engine.IO long-polling instead of a WebSocket
	Deflate  bool   // WebSocket: offer permessage-deflate (wsclient.Conn.Deflate)
	Stamped  bool   // WebSocket: the kernel stamps what arrives (wsclient.Conn.Stamped)
	Token    string
	ClientID string // auth.clientId, "" for none
	Source   net.IP // local address to dial from, nil for any
	Timeout  time.Duration

	// Recovery: the pid of the session to recover (Conn.PID of the last
	// connection) and the last offset it received (Conn.Offset), sent in
	// the CONNECT as socket.io-client does once it has a pid. "": none.
	PID    string
	Offset string
}

// URL is the Engine.IO WebSocket endpoint of a server at base
// (http://host:port or ws://host:port).
func URL(base string) string { return wsclient.URL(base, "/socket.io/?EIO=4&transport=websocket") }

// Dial opens a WebSocket, reads the Engine.IO open packet, sends the
// Socket.IO CONNECT with auth and waits for the server's answer.
func Dial(ctx context.Context, o Options) (*Conn, error) {
	c := &Conn{}
	c.ws.Deflate, c.ws.Stamped = o.Deflate, o.Stamped
	if o.Polling {
		return c.dialPolling(ctx, o)
	}
	if err := c.ws.Dial(ctx, o.URL, o.Source, o.Timeout, func() error { return c.handshake(o) }); err != nil {
		return nil, err
	}
	return c, nil
}

// dialPolling opens a long-polling session and connects over it, within
// the timeout (10 s when zero) and ctx.
func (c *Conn) dialPolling(ctx context.Context, o Options) (*Conn, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	p, err := dialPolling(ctx, o)
	if err != nil {
		return nil, err
	}
	c.poll = p
	dl, _ := ctx.Deadline()
	p.setDeadline(dl)
	if err := c.connect(o); err != nil {
		_ = p.close()
		return nil, err
	}
	p.setDeadline(time.Time{})
	return c, nil
}

func (c *Conn) handshake(o Options) error {
	msg, err := c.Next()
	if err != nil {
		return fmt.Errorf("engine.io open: %w", err)
	}
	if len(msg) == 0 || msg[0] != '0' {
		return fmt.Errorf("engine.io open: got %.60q", msg)
	}
	return c.connect(o)
}

// connectPacket is the Socket.IO CONNECT of o: 40{token, clientId?}, with
// pid and offset when o recovers a session.
func connectPacket(o Options) []byte {
	a, _ := json.Marshal(struct {
		Token    string `json:"token"`
		ClientID string `json:"clientId,omitempty"`
		PID      string `json:"pid,omitempty"`
		Offset   string `json:"offset,omitempty"`
	}{o.Token, o.ClientID, o.PID, o.Offset})
	return append([]byte("40"), a...)
}

// connect sends the Socket.IO CONNECT with auth and reads the answer.
func (c *Conn) connect(o Options) error {
	if err := c.write(connectPacket(o)); err != nil {
		return err
	}
	for {
		msg, err := c.Next()
		if err != nil {
			return fmt.Errorf("socket.io connect: %w", err)
		}
		switch {
		case bytes.HasPrefix(msg, []byte("40")):
			c.SID, c.PID = connectReply(msg[2:])
			c.Recovered = c.PID != "" && c.PID == o.PID
			if c.Recovered {
				// the events that follow continue from where it was
				c.offset = append(c.offset[:0], o.Offset...)
			}
			return nil
		case bytes.HasPrefix(msg, []byte("44")):
			return fmt.Errorf("%w: %s", ErrRefused, msg[2:])
		case bytes.HasPrefix(msg, []byte("42")):
			// an event before the CONNECT reply cannot be ours; skip it
		default:
			return fmt.Errorf("socket.io connect: unexpected %.60q", msg)
		}
	}
}

// connectReply reads the sid and pid of a CONNECT reply, {"sid":"…"} or
// {"sid":"…","pid":"…"}: the spellings the servers send are read without
// encoding/json (a storm's thousands of reconnects pay for it), anything
// else with it.
func connectReply(p []byte) (sid, pid string) {
	if rest, ok := bytes.CutPrefix(p, []byte(`{"sid":"`)); ok {
		if s, ok := bytes.CutSuffix(rest, []byte(`"}`)); ok && bytes.IndexAny(s, `"\`) < 0 {
			return string(s), ""
		}
		if s, q, ok := bytes.Cut(rest, []byte(`","pid":"`)); ok && bytes.IndexAny(s, `"\`) < 0 {
			if q, ok := bytes.CutSuffix(q, []byte(`"}`)); ok && bytes.IndexAny(q, `"\`) < 0 {
				return string(s), string(q)
			}
		}
	}
	var r struct {
		SID string `json:"sid"`
		PID string `json:"pid"`
	}
	_ = json.Unmarshal(p, &r)
	return r.SID, r.PID
}

// Offset is the offset of the last event received (its last argument, when
// a string), kept once the server gave the session a pid; "" for none. With
// PID, what a reconnect presents to recover the session.
func (c *Conn) Offset() string { return string(c.offset) }

// EventOffset returns the offset an event carries: its last argument when
// that is a string and not the event's name, as socket.io-client reads it
// (42["broadcast",{…},"123"] → 123). The frames the servers send are read
// from the end without encoding/json; a string with escapes is decoded.
// The slice is msg's own unless the string had escapes.
func EventOffset(msg []byte) ([]byte, bool) {
	n := len(msg)
	if n < 7 || msg[0] != '4' || msg[1] != '2' || msg[n-1] != ']' || msg[n-2] != '"' {
		return nil, false
	}
	open := bytes.LastIndexByte(msg[:n-2], '"')
	if open < 3 {
		return nil, false
	}
	off := msg[open+1 : n-2]
	if msg[open-1] == ',' && bytes.IndexByte(off, '\\') < 0 {
		// In valid JSON a quote inside a string follows a backslash:
		// the first one back from the end, after a comma, opens the string.
		return off, true
	}
	return decodeEventOffset(msg)
}

// decodeEventOffset is EventOffset with encoding/json, for a last argument
// with escapes (or JSON spaced out).
func decodeEventOffset(msg []byte) ([]byte, bool) {
	i := bytes.IndexByte(msg, '[')
	if i < 0 {
		return nil, false
	}
	var args []json.RawMessage
	if json.Unmarshal(msg[i:], &args) != nil || len(args) < 2 {
		return nil, false
	}
	var off string
	if json.Unmarshal(args[len(args)-1], &off) != nil {
		return nil, false
	}
	return []byte(off), true
}

// Next returns the next Engine.IO message that is not a ping (pings are
// answered here). The slice is valid until the next call.
func (c *Conn) Next() ([]byte, error) {
	for {
		msg, err := c.read()
		if errors.Is(err, ErrClosed) {
			return nil, ErrClosed // without the close frame's code, as an Engine.IO close
		}
		if err != nil {
			return nil, err
		}
		switch {
		case len(msg) == 1 && msg[0] == '2':
			if err := c.write([]byte{'3'}); err != nil {
				return nil, err
			}
			c.Pings++
			continue
		case len(msg) >= 1 && msg[0] == '1':
			return nil, ErrClosed
		case len(msg) >= 2 && msg[0] == '4' && msg[1] == '1':
			return nil, ErrClosed
		}
		if c.PID != "" {
			if off, ok := EventOffset(msg); ok {
				c.offset = append(c.offset[:0], off...)
			}
		}
		return msg, nil
	}
}

// endpointPacket is the EVENT packet of emit("endpoint", {endpointName,
// endpointArgs}, ack) with ack id id.
func endpointPacket(id int, name string, args any) ([]byte, error) {
	call, err := json.Marshal(struct {
		EndpointName string `json:"endpointName"`
		EndpointArgs any    `json:"endpointArgs"`
	}{name, args})
	if err != nil {
		return nil, err
	}
	p := make([]byte, 0, 32+len(call))
	p = append(p, "42"...)
	p = strconv.AppendInt(p, int64(id), 10)
	p = append(p, `["endpoint",`...)
	p = append(p, call...)
	p = append(p, ']')
	return p, nil
}

// Emit sends emit("endpoint", {endpointName, endpointArgs}, ack) and
// returns the ack id to wait for.
func (c *Conn) Emit(name string, args any) (int, error) {
	p, err := endpointPacket(c.ackID, name, args)
	if err != nil {
		return 0, err
	}
	id := c.ackID
	c.ackID++
	return id, c.write(p)
}

// read returns the next Engine.IO packet of either transport.
func (c *Conn) read() ([]byte, error) {
	if c.poll != nil {
		return c.poll.read()
	}
	return c.ws.ReadMessage()
}

// write sends one packet on either transport.
func (c *Conn) write(p []byte) error {
	if c.poll != nil {
		return c.poll.write(p)
	}
	return c.ws.Write(p)
}

// Call is one endpoint call of CallAll.
type Call struct {
	Name string
	Args any
}

// CallAll emits every call at once, their frames in one write, then waits
// for every ack, in order (a socket's calls are answered in the order they
// were sent). This is what socket.io-client does with emits made in a
// "connect" handler: it sends them back to back, without waiting for acks.
// It returns the first failed call's error; the acks' data is not decoded
// (a successful ack is recognised by its first bytes), so that thousands
// of sockets rejoining cost the tool little. After an error the connection
// is out of step: the caller closes it.
func (c *Conn) CallAll(calls []Call) error {
	first := c.ackID
	var err error
	if c.poll != nil {
		err = c.postAll(calls)
	} else {
		err = c.ws.WriteFrames(func(b []byte) ([]byte, error) {
			for _, call := range calls {
				p, err := endpointPacket(c.ackID, call.Name, call.Args)
				if err != nil {
					return b, err
				}
				c.ackID++
				b = wsclient.AppendFrame(b, ws.OpText, p)
			}
			return b, nil
		})
	}
	if err != nil {
		return err
	}
	for i, call := range calls {
		if _, err := c.waitAck(first+i, call.Name, nil, false); err != nil {
			return err
		}
	}
	return nil
}

// postAll sends calls' packets in one POST.
func (c *Conn) postAll(calls []Call) error {
	pkts := make([][]byte, 0, len(calls))
	for _, call := range calls {
		p, err := endpointPacket(c.ackID, call.Name, call.Args)
		if err != nil {
			return err
		}
		c.ackID++
		pkts = append(pkts, p)
	}
	return c.poll.write(pkts...)
}

// Ack is an endpoint's acknowledgement.
type Ack struct {
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code         string `json:"code"`
		Message      string `json:"message"`
		RetryAfterMs int64  `json:"retryAfterMs"` // rate_limited: when to ask again
	} `json:"error"`
}

func (a Ack) Err() error {
	if a.OK {
		return nil
	}
	if a.Error == nil {
		return errors.New("endpoint failed without an error")
	}
	return fmt.Errorf("%s: %s", a.Error.Code, a.Error.Message)
}

// Call emits an endpoint and waits for its ack; broadcasts that arrive
// meanwhile go to onOther (which may be nil).
func (c *Conn) Call(name string, args any, onOther func([]byte)) (Ack, error) {
	id, err := c.Emit(name, args)
	if err != nil {
		return Ack{}, err
	}
	return c.waitAck(id, name, onOther, true)
}

// okAck is how every successful ack starts ({ok, data} in that order, from
// roomcast's encoder and from JSON.stringify on the peer).
var okAck = []byte(`[{"ok":true,`)

// waitAck reads until the ack of call id arrives; other messages go to
// onOther (which may be nil). Without withData, a successful ack is
// returned as {ok:true} without decoding it.
func (c *Conn) waitAck(id int, name string, onOther func([]byte), withData bool) (Ack, error) {
	want := append([]byte("43"), strconv.Itoa(id)...)
	for {
		msg, err := c.Next()
		if err != nil {
			return Ack{}, fmt.Errorf("%s: %w", name, err)
		}
		if bytes.HasPrefix(msg, want) && len(msg) > len(want) && msg[len(want)] == '[' {
			if !withData && bytes.HasPrefix(msg[len(want):], okAck) {
				return Ack{OK: true}, nil
			}
			var args []Ack
			if err := json.Unmarshal(msg[len(want):], &args); err != nil || len(args) != 1 {
				return Ack{}, fmt.Errorf("%s: bad ack %.80q", name, msg)
			}
			return args[0], args[0].Err()
		}
		if onOther != nil {
			onOther(msg)
		}
	}
}

// Close closes the TCP connection at once, without a goodbye: what a lost
// network looks like to the server.
func (c *Conn) Close() error {
	if c.poll != nil {
		return c.poll.close()
	}
	return c.ws.Close()
}

// Arrival is when the message last read reached the socket, by the
// kernel's stamp (wsclient.Conn.Arrival); 0 unless dialled Stamped.
func (c *Conn) Arrival() int64 { return c.ws.Arrival() }

// SetDeadline sets the read and write deadline of the connection (zero: none).
func (c *Conn) SetDeadline(t time.Time) error {
	if c.poll != nil {
		c.poll.setDeadline(t)
		return nil
	}
	return c.ws.SetDeadline(t)
}
