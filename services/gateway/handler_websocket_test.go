package gateway

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/services/gateway/internal/sio"
)

func TestHandshakeRefusedBeforeUpgrade(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.AllowedOrigins = []string{"https://app.example"} })
	for _, q := range []string{"/socket.io/?EIO=3&transport=websocket", "/socket.io/?transport=websocket", "/socket.io/?EIO=4&transport=flashsocket", "/socket.io/?EIO=3&transport=polling"} {
		resp, err := http.Get(tg.url + q)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, q)
	}
	_, err := dial(t, tg, "", http.Header{"Origin": {"https://evil.example"}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "403")

	c, err := dial(t, tg, "", http.Header{"Origin": {"https://app.example"}})
	require.NoError(t, err)
	open := c.next()
	require.Contains(t, open, `"pingInterval":25000`)
	require.Contains(t, open, `"upgrades":[]`)
	require.Contains(t, open, `"maxPayload":65536`)
}

func TestConnect(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()

	c, got := connect(t, tg, `{"token":"`+token(t, "u1", time.Hour)+`","clientId":"tab1"}`)
	require.True(t, strings.HasPrefix(got, `40{"sid":"`), got)
	require.Eventually(t, func() bool { return tg.counter(tg.m.sockets) == 1 }, 5*time.Second, 10*time.Millisecond)
	// Its own rooms: client-tab1 and user-u1, served by the gateway's
	// shared personal subscriptions: none of their own.
	require.Empty(t, tg.RoomSubscriptions())
	require.Equal(t, float64(3), tg.counter(tg.m.subscriptions))
	require.Equal(t, 1, tg.roomMembers(clientRoomOf(t, "u1", "tab1")))
	require.Equal(t, 1, tg.roomMembers(mustRoom(t, "user-u1")))
	c.send("41")
	c.waitClosed()
	require.Eventually(t, func() bool {
		return tg.roomMembers(clientRoomOf(t, "u1", "tab1")) == 0 && tg.counter(tg.m.sockets) == 0
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, float64(3), tg.counter(tg.m.subscriptions))

	// Per room: client-tab1 and user-u1 each with one subscription, the
	// user's chats with two, all gone with the socket.
	pr := e.startGateway(func(c *Config) { c.PersonalSubscriptions = PersonalPerRoom })
	c, _ = connect(t, pr, `{"token":"`+token(t, "u1", time.Hour)+`","clientId":"tab1"}`)
	require.Eventually(t, func() bool { return pr.counter(pr.m.sockets) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.ElementsMatch(t, []string{"live.rooms.client.u1.tab1", "live.rooms.user.u1"}, pr.RoomSubscriptions())
	require.Equal(t, float64(4), pr.counter(pr.m.subscriptions))
	c.send("41")
	c.waitClosed()
	require.Eventually(t, func() bool {
		return len(pr.RoomSubscriptions()) == 0 && pr.counter(pr.m.subscriptions) == 0 && pr.counter(pr.m.sockets) == 0
	}, 5*time.Second, 10*time.Millisecond)

	// A clientId that is not a valid id is replaced by the socket id.
	_, got = connect(t, tg, `{"token":"`+token(t, "u1", time.Hour)+`","clientId":"a.b"}`)
	require.True(t, strings.HasPrefix(got, `40{"sid":"`), got)
	var answer struct{ SID string }
	require.NoError(t, json.Unmarshal([]byte(got[2:]), &answer))
	sid := answer.SID
	require.Eventually(t, func() bool { return tg.roomMembers(clientRoomOf(t, "u1", sid)) == 1 }, 5*time.Second, 10*time.Millisecond)

	// Token in the query string and in an Authorization header.
	c, err := dial(t, tg, "&token="+token(t, "u2", time.Hour), nil)
	require.NoError(t, err)
	c.next()
	c.send("40")
	require.True(t, strings.HasPrefix(c.next(), `40{"sid":"`))
	c, err = dial(t, tg, "", http.Header{"Authorization": {"Bearer " + token(t, "u3", time.Hour)}})
	require.NoError(t, err)
	c.next()
	c.send("40")
	require.True(t, strings.HasPrefix(c.next(), `40{"sid":"`))

	// Another namespace is refused, the socket stays.
	c, err = dial(t, tg, "", nil)
	require.NoError(t, err)
	c.next()
	c.send("40/admin,")
	require.Equal(t, `44/admin,{"message":"Invalid namespace"}`, c.next())
	c.send(`40{"token":"` + token(t, "u4", time.Hour) + `"}`)
	require.True(t, strings.HasPrefix(c.next(), `40{"sid":"`))
}

func TestAuthRefusals(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()
	hs := func(claims jwt.MapClaims, key string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key))
		require.NoError(t, err)
		return s
	}
	now := time.Now()
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	rs, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix()}).SignedString(rk)
	require.NoError(t, err)
	cases := []struct{ name, token, want string }{
		{"expired", hs(jwt.MapClaims{"sub": "u1", "exp": now.Add(-time.Minute).Unix()}, testSecret), reasonExpired},
		{"wrong key", hs(jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix()}, "another-secret"), reasonSignature},
		{"alg none", none, reasonAlgorithm},
		{"RS256 when HS256 is configured", rs, reasonAlgorithm},
		{"no sub", hs(jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}, testSecret), reasonNoSub},
		{"bad sub", hs(jwt.MapClaims{"sub": "board.*", "exp": now.Add(time.Hour).Unix()}, testSecret), reasonBadSub},
		{"no exp", hs(jwt.MapClaims{"sub": "u1"}, testSecret), reasonNoExp},
		{"not yet valid", hs(jwt.MapClaims{"sub": "u1", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour / 2).Unix()}, testSecret), reasonNotYetValid},
		{"garbage", "not-a-jwt", reasonMalformed},
		{"no token", "", reasonNoToken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl, got := connect(t, tg, `{"token":"`+c.token+`"}`)
			require.Equal(t, `44{"message":"`+c.want+`","data":{"code":401}}`, got)
			cl.waitClosed()
		})
	}
	require.Equal(t, float64(0), tg.counter(tg.m.sockets))
}

func TestPublicKeyTokens(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	dir := t.TempDir()
	path := writePEM(t, dir, pub)
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.JWTSecret, c.JWTPublicKeyFile = "", path })
	ed, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(priv)
	require.NoError(t, err)
	_, got := connect(t, tg, `{"token":"`+ed+`"}`)
	require.True(t, strings.HasPrefix(got, `40{"sid":"`), got)
	// An HS256 token signed with the public key's bytes is refused.
	_, got = connect(t, tg, `{"token":"`+token(t, "u1", time.Hour)+`"}`)
	require.Equal(t, `44{"message":"`+reasonAlgorithm+`","data":{"code":401}}`, got)
}

func TestBadFramesCloseOnlyThatSocket(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.MaxPayload = 1024 })
	good := connectUser(t, tg, "u0")

	cases := map[string]func(c *client){
		"not CONNECT first": func(c *client) { c.send(`42["endpoint",{}]`) },
		"binary frame": func(c *client) {
			_ = wsutil.WriteClientBinary(c.conn, []byte("4abc"))
		},
		"frame over max payload": func(c *client) { c.send("40" + strings.Repeat(" ", 2000)) },
		"client ping":            func(c *client) { c.send("2") },
		"malformed packet":       func(c *client) { c.send("4x") },
		"binary event":           func(c *client) { c.send(`451-["ev",{"_placeholder":true,"num":0}]`) },
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := dial(t, tg, "", nil)
			require.NoError(t, err)
			c.next()
			bad(c)
			c.waitClosed()
		})
	}
	t.Run("event that is not an array", func(t *testing.T) {
		c := connectUser(t, tg, "u1")
		c.send(`42{}`)
		c.waitClosed()
	})
	t.Run("fragmented frame", func(t *testing.T) {
		c, err := dial(t, tg, "", nil)
		require.NoError(t, err)
		c.next()
		f := ws.NewTextFrame([]byte("40"))
		f.Header.Fin = false
		c.wmu.Lock()
		require.NoError(t, ws.WriteFrame(c.conn, ws.MaskFrame(f)))
		c.wmu.Unlock()
		c.waitClosed()
	})
	// The well-behaved socket did not notice.
	good.mustOK("updateClient", map[string]any{"isActive": true})
	for _, kind := range []string{"not_connect", "binary", "too_large", "unexpected", "malformed", "fragmented"} {
		require.Positive(t, tg.counter(tg.m.badFrames.WithLabelValues(kind)), kind)
	}
}

func TestConnectTimeoutAndHeartbeat(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) {
		// Generous enough that a well-behaved socket keeps up under -race
		// on a loaded 2-core machine; the silent ones still go within seconds.
		c.ConnectTimeout = time.Second
		c.PingInterval = 200 * time.Millisecond
		c.PingTimeout = time.Second
	})
	c, err := dial(t, tg, "", nil)
	require.NoError(t, err)
	c.next()
	c.waitClosed() // no CONNECT in time

	alive := connectUser(t, tg, "u1") // answers pings
	silent, err := dial(t, tg, "", nil, func(c *client) { c.pong = false })
	require.NoError(t, err)
	silent.next()
	silent.send(`40{"token":"` + token(t, "u2", time.Hour) + `"}`)
	require.True(t, strings.HasPrefix(silent.next(), "40"))
	require.Equal(t, "2", silent.next()) // pinged
	silent.waitClosed()                  // no pong in time
	alive.mustOK("updateClient", map[string]any{"isActive": true})
}

// TestQuickConnectAuth: the auth spellings clients send are read without
// encoding/json; anything else is left to sio.ParseConnectAuth.
func TestQuickConnectAuth(t *testing.T) {
	for raw, want := range map[string]sio.ConnectAuth{
		`{"token":"t.k.n"}`:                          {Token: "t.k.n"},
		`{"token":"t.k.n","clientId":"c1"}`:          {Token: "t.k.n", ClientID: "c1"},
		`{"clientId":"c1","token":"t.k.n"}`:          {Token: "t.k.n", ClientID: "c1"},
		`{"clientId":"c1"}`:                          {ClientID: "c1"},
		`{"pid":"p1","offset":"17","token":"t.k.n"}`: {Token: "t.k.n", PID: "p1", Offset: "17"},
		`{"pid":"p1","token":"t.k.n"}`:               {Token: "t.k.n", PID: "p1"},
	} {
		got, ok := quickConnectAuth([]byte(raw))
		require.True(t, ok, raw)
		require.Equal(t, want, got, raw)
	}
	for _, raw := range []string{``, `{}`, `{"token":"a","token":"b"}`, `{"token":"a\"b"}`, `{"token":1}`,
		`{ "token":"a"}`, `{"token":"a","other":"b"}`, `{"token":"a",}`, `{"token":"a"`, `null`, `{"pid":"a","pid":"b"}`, `{"offset":1}`} {
		_, ok := quickConnectAuth([]byte(raw))
		require.False(t, ok, raw)
	}
}

// FuzzQuickConnectAuth: whatever the quick reader accepts, the JSON one
// reads the same way.
func FuzzQuickConnectAuth(f *testing.F) {
	f.Add([]byte(`{"token":"t","clientId":"c"}`))
	f.Add([]byte(`{"clientId":"c","token":"t"}`))
	f.Add([]byte(`{"pid":"p","offset":"12","token":"t"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := quickConnectAuth(b)
		if !ok || !utf8.Valid(b) {
			return
		}
		want, err := sio.ParseConnectAuth(b)
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}

// TestConnectAtTheDeadline: CONNECTs that arrive as the CONNECT deadline
// closes their socket. Under -race this was a data race (connect wrote the
// socket's user and client on its worker while the heartbeat's close read
// them); whichever wins, the socket is either connected or closed, and
// nothing is left behind in the user index.
func TestConnectAtTheDeadline(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway(func(c *Config) { c.ConnectTimeout = 3 * time.Millisecond })
	connectFrame := ws.MustCompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(`40{"token":"` + token(t, "u1", time.Hour) + `"}`))))
	for range 300 {
		conn, _, _, err := ws.Dialer{Timeout: 5 * time.Second}.Dial(context.Background(), "ws"+strings.TrimPrefix(tg.url, "http")+wsPath)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		_, _ = conn.Write(connectFrame)
	}
	// Settled: every socket still in the user index is connected, with its
	// heartbeat scheduled, and no closed one holds a heartbeat.
	require.Eventually(t, func() bool {
		sockets := tg.allSockets()
		for _, s := range sockets {
			s.mu.Lock()
			state := s.state
			s.mu.Unlock()
			if state != stateConnected {
				return false
			}
		}
		return tg.hb.len() == len(sockets) && int(tg.counter(tg.m.sockets)) == len(sockets)
	}, 10*time.Second, 10*time.Millisecond, "a socket left behind")
}
