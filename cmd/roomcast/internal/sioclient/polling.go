package sioclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/wsclient"
)

// Engine.IO v4 long-polling, the transport of a client that cannot open a
// WebSocket: the open packet from a first GET, then one long-poll GET after
// another (packets separated by \x1e) in a goroutine of the socket's own,
// and the client's packets POSTed from the goroutine that owns the socket.
// Lean like the WebSocket side: the HTTP connections are kept and reused
// (one transport per source address, idle connections without a bound per
// host), and the GET loop hands each response's packets over a channel.

// PollingURL is the Engine.IO long-polling endpoint of a server at base
// (http://host:port or ws://host:port).
func PollingURL(base string) string {
	base = strings.TrimSuffix(base, "/")
	if rest, ok := strings.CutPrefix(base, "ws://"); ok {
		base = "http://" + rest
	}
	return base + "/socket.io/?EIO=4&transport=polling"
}

// maxPollBody bounds a GET response the client accepts (a packet is at
// most wsclient.MaxFrame, a few of them may come together).
const maxPollBody = 4 << 20

// polling is one long-polling session.
type polling struct {
	hc   *http.Client
	url  string // the endpoint with &sid=
	in   chan [][]byte
	err  error // why in was closed; read after it is
	pend [][]byte
	ctx  context.Context
	stop context.CancelFunc

	mu       sync.Mutex
	deadline time.Time
}

// clients are the HTTP clients, one per source address, shared by every
// polling socket of the process so that connections are reused.
var clients sync.Map // string(source) → *http.Client

func httpClient(source net.IP) *http.Client {
	key := string(source)
	if c, ok := clients.Load(key); ok {
		return c.(*http.Client)
	}
	nd := net.Dialer{KeepAlive: -1} // the Engine.IO pings watch the connections
	if source != nil {
		nd.LocalAddr = &net.TCPAddr{IP: source}
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wsclient.CountReads(conn), nil
		},
		// Every socket holds a GET open and now and then a POST: the
		// default of 2 idle connections per host would close and redial
		// nearly every request's connection.
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 1 << 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ReadBufferSize:      1024,
		WriteBufferSize:     1024,
	}
	c, _ := clients.LoadOrStore(key, &http.Client{Transport: tr})
	return c.(*http.Client)
}

// dialPolling opens a session: the open packet's sid, then the GET loop.
func dialPolling(ctx context.Context, o Options) (*polling, error) {
	hc := httpClient(o.Source)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL, nil)
	if err != nil {
		return nil, err
	}
	body, err := doPoll(hc, req)
	if err != nil {
		return nil, fmt.Errorf("engine.io open: %w", err)
	}
	open, _, _ := bytes.Cut(body, []byte{0x1e})
	if len(open) == 0 || open[0] != '0' {
		return nil, fmt.Errorf("engine.io open: got %.60q", open)
	}
	var hs struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(open[1:], &hs); err != nil || hs.SID == "" {
		return nil, fmt.Errorf("engine.io open: no sid in %.80q", open)
	}
	p := &polling{hc: hc, url: o.URL + "&sid=" + url.QueryEscape(hs.SID), in: make(chan [][]byte, 4)}
	p.ctx, p.stop = context.WithCancel(context.Background())
	if rest := body[len(open):]; len(rest) > 1 { // packets after the open one
		p.pend = split(rest[1:])
	}
	go p.getLoop()
	return p, nil
}

// doPoll runs one request and returns its body, an error unless 200.
func doPoll(hc *http.Client, req *http.Request) ([]byte, error) {
	res, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxPollBody+1))
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: HTTP %d %.80q", ErrClosed, res.StatusCode, body)
	}
	if len(body) > maxPollBody {
		return nil, fmt.Errorf("poll response over %d bytes", maxPollBody)
	}
	return body, nil
}

// split cuts a payload into its packets.
func split(body []byte) [][]byte {
	if len(body) == 0 {
		return nil
	}
	return bytes.Split(body, []byte{0x1e})
}

// getLoop long-polls until the session ends or is closed.
func (p *polling) getLoop() {
	defer close(p.in)
	for {
		req, err := http.NewRequestWithContext(p.ctx, http.MethodGet, p.url, nil)
		if err != nil {
			p.err = err
			return
		}
		body, err := doPoll(p.hc, req)
		if err != nil {
			p.err = err
			return
		}
		select {
		case p.in <- split(body):
		case <-p.ctx.Done():
			p.err = ErrClosed
			return
		}
	}
}

// read returns the next packet.
func (p *polling) read() ([]byte, error) {
	for len(p.pend) == 0 {
		p.mu.Lock()
		dl := p.deadline
		p.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			t := time.NewTimer(time.Until(dl))
			defer t.Stop()
			timeout = t.C
		}
		select {
		case pkts, ok := <-p.in:
			if !ok {
				if p.err == nil {
					return nil, ErrClosed
				}
				return nil, p.err
			}
			p.pend = pkts
		case <-timeout:
			return nil, errTimeout
		}
	}
	pkt := p.pend[0]
	p.pend = p.pend[1:]
	return pkt, nil
}

// errTimeout is a read past the deadline SetDeadline set.
var errTimeout = errors.New("polling read: deadline passed")

// write POSTs packets in one payload.
func (p *polling) write(pkts ...[]byte) error {
	body := bytes.Join(pkts, []byte{0x1e})
	ctx := p.ctx
	p.mu.Lock()
	dl := p.deadline
	p.mu.Unlock()
	if !dl.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	_, err = doPoll(p.hc, req)
	return err
}

// close ends the GET loop and aborts its request: the server sees the
// session's connection go, and its heartbeat ends the session.
func (p *polling) close() error {
	p.stop()
	return nil
}

func (p *polling) setDeadline(t time.Time) {
	p.mu.Lock()
	p.deadline = t
	p.mu.Unlock()
}
