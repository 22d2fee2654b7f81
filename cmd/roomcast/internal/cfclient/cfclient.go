// Package cfclient is a lean Centrifugo client: its JSON protocol (client
// protocol v2) over WebSocket, connect with a JWT, subscribe, receive
// publications. It is what the load tool needs to drive Centrifugo the way
// it drives roomcast and the Socket.IO peer, and no more: no recovery, no
// history, no RPC.
//
// On the wire (one JSON object per line; several may share a frame):
//
//	> {"id":1,"connect":{"token":"…","name":"roomcast-bench"}}
//	< {"id":1,"connect":{"client":"…","version":"…","ping":25,"pong":true}}
//	> {"id":2,"subscribe":{"channel":"board-b0"}}
//	< {"id":2,"subscribe":{}}
//	< {"push":{"channel":"board-b0","pub":{"data":{…}}}}
//	< {}    > {}                                     (server ping, client pong)
//	< {"id":3,"error":{"code":103,"message":"permission denied"}}
package cfclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/wsclient"
)

// Like sioclient, and for the same reason (thousands share the tool's
// process and CPU): one goroutine owns a connection and does every read and
// write on it, pongs included (the WebSocket underneath is wsclient's); no
// JSON decoding of publications.

var (
	// ErrRefused is a connect or subscribe the server answered with an error.
	ErrRefused = errors.New("refused")
	// ErrClosed is the server closing the WebSocket (its close frame's code
	// and reason follow in the wrapped message).
	ErrClosed = wsclient.ErrClosed
)

// Conn is one connected, authenticated Centrifugo client.
type Conn struct {
	ws     wsclient.Conn
	rest   []byte // what is left of the current frame after the last message
	nextID int
	Client string // the client id from the connect reply
}

// Options say where and how a client connects.
type Options struct {
	URL     string // ws://host:port/connection/websocket
	Token   string // connection JWT (sub = user id)
	Source  net.IP // local address to dial from, nil for any
	Timeout time.Duration
}

// URL is the WebSocket endpoint of a Centrifugo at base (http://host:port).
func URL(base string) string { return wsclient.URL(base, "/connection/websocket") }

// Dial opens a WebSocket and sends connect with the token, and waits for
// the reply.
func Dial(ctx context.Context, o Options) (*Conn, error) {
	c := &Conn{nextID: 1}
	if err := c.ws.Dial(ctx, o.URL, o.Source, o.Timeout, func() error { return c.connect(o.Token) }); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Conn) connect(token string) error {
	tok, _ := json.Marshal(token)
	id := c.nextID
	c.nextID++
	cmd := `{"id":` + strconv.Itoa(id) + `,"connect":{"token":` + string(tok) + `,"name":"roomcast-bench"}}`
	if err := c.ws.Write([]byte(cmd)); err != nil {
		return err
	}
	rep, err := c.waitReply(id)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	var cr struct {
		Client string `json:"client"`
	}
	if err := json.Unmarshal(rep.Connect, &cr); err != nil || rep.Connect == nil {
		return fmt.Errorf("connect: unexpected reply %.80q", rep.raw)
	}
	c.Client = cr.Client
	return nil
}

// reply is a command's answer.
type reply struct {
	ID    int `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Connect   json.RawMessage `json:"connect"`
	Subscribe json.RawMessage `json:"subscribe"`
	raw       []byte
}

// waitReply reads until the reply to command id, skipping pushes.
func (c *Conn) waitReply(id int) (reply, error) {
	for {
		msg, err := c.Next()
		if err != nil {
			return reply{}, err
		}
		if bytes.HasPrefix(msg, []byte(`{"push":`)) {
			continue
		}
		var r reply
		if err := json.Unmarshal(msg, &r); err != nil {
			return r, fmt.Errorf("unreadable reply %.80q: %w", msg, err)
		}
		if r.ID != id {
			return r, fmt.Errorf("reply to command %d while waiting for %d: %.80q", r.ID, id, msg)
		}
		r.raw = bytes.Clone(msg)
		if r.Error != nil {
			return r, fmt.Errorf("%w: %d %s", ErrRefused, r.Error.Code, r.Error.Message)
		}
		return r, nil
	}
}

// SubscribeAll subscribes to every channel, the commands in one frame (as a
// client's connect handler sends them), and waits for every reply. After an
// error the connection is out of step: the caller closes it.
func (c *Conn) SubscribeAll(channels []string) error {
	first := c.nextID
	var b []byte
	for i, ch := range channels {
		if i > 0 {
			b = append(b, '\n')
		}
		name, _ := json.Marshal(ch)
		b = append(b, `{"id":`...)
		b = strconv.AppendInt(b, int64(c.nextID), 10)
		b = append(b, `,"subscribe":{"channel":`...)
		b = append(b, name...)
		b = append(b, `}}`...)
		c.nextID++
	}
	if err := c.ws.Write(b); err != nil {
		return err
	}
	for i, ch := range channels {
		r, err := c.waitReply(first + i)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", ch, err)
		}
		if r.Subscribe == nil {
			return fmt.Errorf("subscribe %s: unexpected reply %.80q", ch, r.raw)
		}
	}
	return nil
}

// Next returns the next message (a reply or a push) that is not a ping;
// pings are answered here. The slice is valid until the next call.
func (c *Conn) Next() ([]byte, error) {
	for {
		if len(c.rest) == 0 {
			frame, err := c.ws.ReadMessage()
			if err != nil {
				return nil, err
			}
			c.rest = frame
		}
		var msg []byte
		msg, c.rest = nextMessage(c.rest)
		switch {
		case len(msg) == 0:
			continue
		case len(msg) == 2 && msg[0] == '{' && msg[1] == '}':
			if err := c.ws.Write([]byte("{}")); err != nil {
				return nil, err
			}
			continue
		}
		return msg, nil
	}
}

// nextMessage cuts the first message off a frame's rest: Centrifugo puts
// several in one frame, a line each, when they are ready together.
func nextMessage(rest []byte) (msg, left []byte) {
	msg = rest
	if i := bytes.IndexByte(rest, '\n'); i >= 0 {
		msg, left = rest[:i], rest[i+1:]
	}
	return bytes.TrimSpace(msg), left
}

// Close closes the TCP connection without a goodbye.
func (c *Conn) Close() error { return c.ws.Close() }

// Arrival is wsclient.Conn.Arrival: 0, since the bench never dials
// Centrifugo's sockets stamped.
func (c *Conn) Arrival() int64 { return c.ws.Arrival() }

// SetDeadline sets the connection's read and write deadline.
func (c *Conn) SetDeadline(t time.Time) error { return c.ws.SetDeadline(t) }
