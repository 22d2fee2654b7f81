package engineio

import (
	"bytes"
	"compress/flate"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/stretchr/testify/require"
)

// broadcastPacket is a broadcast's Engine.IO packet of about n bytes, JSON
// such as a board's task updates: ids, timestamps, titles in words, so
// that it compresses as such JSON does (not a repeated string).
func broadcastPacket(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the a task sprint board review deploy fix bug login page api cache user team design test release notes " +
		"update priority high low medium done todo progress blocked owner due estimate points label frontend backend")
	b := []byte(`42["broadcast",{"destination":"board-b1-tasks","data":{"event":"update-task","id":"t1","updatedAt":1712345678901,"diff":{"tasks":[`)
	for len(b) < n-60 {
		b = fmt.Appendf(b, `{"id":"%016x","updatedAt":%d,"points":%d,"title":"`, r.Uint64(), 1712345678901+r.IntN(1e8), r.IntN(13))
		for i := range 3 + r.IntN(5) {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, words[r.IntN(len(words))]...)
		}
		b = append(b, `"},`...)
	}
	return append(b, `{}]}},"seq":1234,"prevSeq":1233}]`...)
}

func sealed(packet []byte) []byte {
	b := make([]byte, MaxHeader, MaxHeader+len(packet))
	return Seal(append(b, packet...))
}

// TestMessageFor: a Message gives a socket that negotiated
// permessage-deflate one compressed frame (RSV1 set, shared by every such
// member: the same backing array, compressed once) that a stock inflater
// reads back to the packet; the plain frame to a socket that did not, and
// to everyone when the packet is under the threshold or the threshold is
// negative (off).
func TestMessageFor(t *testing.T) {
	packet := broadcastPacket(3000)
	plainWS, d1, d2 := &WebSocket{}, &WebSocket{deflate: true}, &WebSocket{deflate: true}
	m := Message{Frame: sealed(packet), Threshold: 512}

	require.Equal(t, m.Frame, m.For(plainWS))
	f1, f2 := m.For(d1), m.For(d2)
	require.Same(t, &f1[0], &f2[0], "one compressed frame for every member")
	require.Same(t, &m.Deflated()[0], &f1[0])
	require.Less(t, len(f1), len(m.Frame)/2)
	require.Equal(t, m.Frame, m.For(plainWS))

	f, err := ws.ReadFrame(bytes.NewReader(f1))
	require.NoError(t, err)
	require.Equal(t, ws.Rsv(true, false, false), f.Header.Rsv)
	require.Equal(t, ws.OpText, f.Header.OpCode)
	require.True(t, f.Header.Fin)
	f, err = wsflate.DecompressFrame(f)
	require.NoError(t, err)
	require.Equal(t, string(packet), string(f.Payload))

	small := Message{Frame: sealed(broadcastPacket(300)), Threshold: 512}
	require.Equal(t, small.Frame, small.For(d1))
	require.Nil(t, small.Deflated())
	off := Message{Frame: sealed(packet), Threshold: -1}
	require.Equal(t, off.Frame, off.For(d1))
	require.Nil(t, off.Deflated())
	// Compressing that does not make it smaller sends it plain.
	random := make([]byte, 2000)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(random)
	noisy := Message{Frame: sealed(random), Threshold: 0}
	require.Equal(t, noisy.Frame, noisy.For(d1))
	require.Nil(t, noisy.Deflated())
}

// compress is a client's compressed message: flate, the sync flush's tail
// left off.
func compress(t testing.TB, p []byte) []byte {
	var b bytes.Buffer
	fw, err := flate.NewWriter(&b, flate.BestCompression)
	require.NoError(t, err)
	_, err = fw.Write(p)
	require.NoError(t, err)
	require.NoError(t, fw.Flush())
	return bytes.TrimSuffix(b.Bytes(), deflateTail)
}

// TestInflate: a client's compressed message is inflated to what it sent;
// one that inflates past the bound (a zip bomb: 1 KB that is 64 MB) is
// refused without inflating it all, and so is one just one byte over;
// data that is not deflate is an error.
func TestInflate(t *testing.T) {
	p := []byte(`42["endpoint",{"endpointName":"updateClient","endpointArgs":{"isActive":true}}]`)
	got, err := inflate(compress(t, p), 1024)
	require.NoError(t, err)
	require.Equal(t, string(p), string(got))

	got, err = inflate(compress(t, nil), 1024)
	require.NoError(t, err)
	require.Empty(t, got)

	exact := bytes.Repeat([]byte("a"), 4096)
	got, err = inflate(compress(t, exact), 4096)
	require.NoError(t, err)
	require.Len(t, got, 4096)
	_, err = inflate(compress(t, append(exact, 'a')), 4096)
	require.ErrorIs(t, err, errInflateTooLarge)

	bomb := compress(t, make([]byte, 64<<20))
	require.Less(t, len(bomb), 100<<10)
	allocs := testing.AllocsPerRun(1, func() {
		_, err = inflate(bomb, 64<<10)
	})
	require.ErrorIs(t, err, errInflateTooLarge)
	require.Less(t, allocs, 100.0)

	_, err = inflate([]byte("\xff\xff\xff not deflate"), 1024)
	require.Error(t, err)
	require.NotErrorIs(t, err, errInflateTooLarge)
}

// TestNegotiate: the offers the gateway accepts (a browser's, Node's ws
// with client_max_window_bits, gobwas's) and those it declines without
// failing the upgrade (server_max_window_bits: it compresses with the full
// window; an unknown parameter); off, it negotiates nothing.
func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		offer  string
		accept bool
	}{
		{"permessage-deflate; client_max_window_bits", true},
		{"permessage-deflate", true},
		{"permessage-deflate; server_no_context_takeover; client_no_context_takeover", true},
		{"permessage-deflate; server_max_window_bits=10", false},
		{"permessage-deflate; future_param", false},
		{"x-webkit-deflate-frame", false},
	} {
		t.Run(tc.offer, func(t *testing.T) {
			n := newNegotiator(true)
			opts, ok := httpheadOptions(tc.offer)
			require.True(t, ok)
			var accepted string
			for _, o := range opts {
				a, err := n.hook()(o)
				require.NoError(t, err)
				if a.Size() > 0 {
					accepted = a.String()
				}
			}
			require.Equal(t, tc.accept, n.accepted())
			if tc.accept {
				require.True(t, strings.Contains(accepted, "server_no_context_takeover") && strings.Contains(accepted, "client_no_context_takeover"), accepted)
			}
		})
	}
	require.Nil(t, newNegotiator(false).hook())
	require.False(t, newNegotiator(false).accepted())
}

func httpheadOptions(s string) ([]httphead.Option, bool) {
	return httphead.ParseOptions([]byte(s), nil)
}

// FuzzInflate: whatever a client sends as a compressed message, inflate
// neither panics nor returns more than its bound, and a message a
// compressor made comes back as it was.
func FuzzInflate(f *testing.F) {
	f.Add(compress(f, []byte(`42["endpoint",{"endpointName":"updateClient"}]`)), false)
	f.Add(compress(f, make([]byte, 5000)), false)
	f.Add([]byte("\xff\xff\xff not deflate"), false)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, data []byte, asPlain bool) {
		const max = 4096
		in := data
		if asPlain {
			in = compress(t, data)
		}
		got, err := inflate(in, max)
		if err == nil && len(got) > max {
			t.Fatalf("inflated %d bytes past the bound %d", len(got), max)
		}
		if asPlain {
			if len(data) > max {
				require.ErrorIs(t, err, errInflateTooLarge)
			} else {
				require.NoError(t, err)
				require.Equal(t, data, got)
			}
		}
	})
}
