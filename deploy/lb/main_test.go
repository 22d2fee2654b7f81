package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeGateway answers like a gateway: /readyz (while ready), an Engine.IO
// polling handshake with a fresh sid, any other request with its name,
// and a WebSocket upgrade that stays open and echoes.
type fakeGateway struct {
	name  string
	ready atomic.Bool
	srv   *httptest.Server
	sids  atomic.Int64
}

func startGateway(t *testing.T, name string) *fakeGateway {
	g := &fakeGateway{name: name}
	g.ready.Store(true)
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/readyz":
			if !g.ready.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		case r.Header.Get("Upgrade") == "websocket":
			conn, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n%s\n", g.name)
			rw.Flush()
			io.Copy(conn, rw) // echo until the client closes
		case r.URL.Query().Get("transport") == "polling" && r.URL.Query().Get("sid") == "":
			fmt.Fprintf(w, `0{"sid":"%s-%d","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000}`+"\x1e"+`40`, g.name, g.sids.Add(1))
		default:
			fmt.Fprint(w, g.name)
		}
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func startLB(t *testing.T, gws ...*fakeGateway) (*balancer, string) {
	var hosts []string
	for _, g := range gws {
		hosts = append(hosts, strings.TrimPrefix(g.srv.URL, "http://"))
	}
	lb, err := newBalancer(hosts)
	if err != nil {
		t.Fatal(err)
	}
	lb.checkOnce()
	srv := httptest.NewServer(lb)
	t.Cleanup(srv.Close)
	return lb, srv.URL
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// websocket opens an upgraded connection through the lb and returns the
// name of the gateway that answered; it stays open until the test ends.
func websocket(t *testing.T, lbURL, query string) string {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(lbURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprint(conn, "GET /socket.io/?EIO=4&transport=websocket"+query+" HTTP/1.1\r\nHost: lb\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through the lb: %v %v", resp, err)
	}
	name, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "ping\n")
	if echo, _ := r.ReadString('\n'); echo != "ping\n" {
		t.Fatalf("the tunnel echoed %q", echo)
	}
	return strings.TrimSpace(name)
}

// New sessions go to the gateway with the fewest open ones: two
// WebSockets land on two gateways, and the lb counts them as open.
func TestSpreadsWebSockets(t *testing.T) {
	a, b := startGateway(t, "a"), startGateway(t, "b")
	lb, url := startLB(t, a, b)
	if got := []string{websocket(t, url, ""), websocket(t, url, "")}; got[0] == got[1] {
		t.Fatalf("both WebSockets on %s", got[0])
	}
	for _, be := range lb.backends {
		if be.active.Load() != 1 {
			t.Fatalf("%s has %d open, want 1", be.host, be.active.Load())
		}
	}
}

// Every request of a polling session reaches the gateway that opened it,
// though the other has fewer open requests.
func TestPollingSessionAffinity(t *testing.T) {
	a, b := startGateway(t, "a"), startGateway(t, "b")
	_, url := startLB(t, a, b)
	_, open := get(t, url+"/socket.io/?EIO=4&transport=polling")
	sid := open[strings.Index(open, `"sid":"`)+7 : strings.Index(open, `","upgrades"`)]
	owner := sid[:1]
	websocket(t, url, "") // the owner may now be the busier one
	for range 5 {
		if _, got := get(t, url+"/socket.io/?EIO=4&transport=polling&sid="+sid); got != owner {
			t.Fatalf("sid %s reached %s, not %s", sid, got, owner)
		}
	}
	if got := websocket(t, url, "&sid="+sid); got != owner {
		t.Fatalf("the upgrade of sid %s reached %s", sid, got)
	}
}

// A gateway whose /readyz fails (draining, stopped) gets no new session,
// and its sessions go elsewhere; with none ready the lb says so.
func TestNotReadyGatewayGetsNothing(t *testing.T) {
	a, b := startGateway(t, "a"), startGateway(t, "b")
	lb, url := startLB(t, a, b)
	_, open := get(t, url+"/socket.io/?EIO=4&transport=polling")
	sid := open[strings.Index(open, `"sid":"`)+7 : strings.Index(open, `","upgrades"`)]
	owner, other := a, b
	if strings.HasPrefix(sid, "b") {
		owner, other = b, a
	}
	owner.ready.Store(false)
	lb.checkOnce()
	for range 3 {
		if _, got := get(t, url+"/x"); got != other.name {
			t.Fatalf("a new request reached %s, not ready", got)
		}
	}
	if _, got := get(t, url+"/x?sid="+sid); got != other.name {
		t.Fatalf("the session of a gateway not ready reached %s", got)
	}

	other.srv.Close() // stopped: refused connections also take it out at once
	if code, _ := get(t, url+"/x"); code != http.StatusBadGateway {
		t.Fatalf("to a stopped gateway: %d, want 502", code)
	}
	if code, _ := get(t, url+"/lb/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("lb healthz with no gateway ready: %d", code)
	}
	owner.ready.Store(true)
	lb.checkOnce()
	deadline := time.Now().Add(5 * time.Second)
	for code, _ := get(t, url+"/lb/healthz"); code != http.StatusOK; code, _ = get(t, url+"/lb/healthz") {
		if time.Now().After(deadline) {
			t.Fatalf("lb healthz: %d once a gateway is ready again", code)
		}
	}
	if _, got := get(t, url+"/x"); got != owner.name {
		t.Fatalf("reached %s", got)
	}
}

// FuzzLearn: whatever a polling handshake's answer holds, learn does not
// panic, hands the body on unchanged, and remembers a sid only from a
// well-formed open packet.
func FuzzLearn(f *testing.F) {
	for _, seed := range []string{
		`0{"sid":"abc","upgrades":["websocket"]}` + "\x1e40",
		`0{"sid":""}`, `0{"sid":1}`, `0`, `40`, "", "\x1e", `0{"sid":"a"`, `0null`,
		`0{"sid":"big"}` + "\x1e4" + strings.Repeat("x", 10<<10), // longer than learn reads
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		lb, err := newBalancer([]string{"gw:1"})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "/socket.io/?EIO=4&transport=polling", nil)
		resp := &http.Response{StatusCode: http.StatusOK, Request: req, Body: io.NopCloser(strings.NewReader(body))}
		if err := lb.learn(lb.backends[0], resp); err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		if string(got) != body {
			t.Fatalf("body changed: %q → %q", body, got)
		}
		for sid := range lb.sessions {
			if sid == "" || !strings.HasPrefix(body, "0{") || !strings.Contains(body, sid) {
				t.Fatalf("remembered sid %q from %q", sid, body)
			}
		}
	})
}
