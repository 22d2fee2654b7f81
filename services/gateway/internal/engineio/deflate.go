package engineio

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"sync"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// permessage-deflate (RFC 7692) without context takeover either way: every
// message is compressed on its own, so that a broadcast is compressed once
// per gateway and the same frame goes to every member that negotiated it
// (Message), and a socket keeps no compressor or dictionary between
// messages: an idle socket costs no more than without compression.

// deflateParams is what the gateway answers an offer with.
var deflateParams = wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}

// negotiator is the upgrader's Negotiate hook for one upgrade; accepted
// reports whether permessage-deflate was agreed. An offer the gateway
// cannot honour (a server_max_window_bits: it compresses with the full
// window) is declined, and the socket goes on without compression.
type negotiator struct{ ext wsflate.Extension }

func newNegotiator(on bool) *negotiator {
	if !on {
		return nil
	}
	return &negotiator{ext: wsflate.Extension{Parameters: deflateParams}}
}

// hook is the Negotiate function for ws.Upgrader (nil when off).
func (n *negotiator) hook() func(httphead.Option) (httphead.Option, error) {
	if n == nil {
		return nil
	}
	return n.negotiate
}

// negotiate declines an offer it cannot read (an unknown or malformed
// parameter) rather than fail the upgrade: the socket goes on without
// compression, as RFC 7692 has a server do with an offer it does not
// accept.
func (n *negotiator) negotiate(opt httphead.Option) (httphead.Option, error) {
	accept, err := n.ext.Negotiate(opt)
	if err != nil {
		return httphead.Option{}, nil
	}
	return accept, nil
}

func (n *negotiator) accepted() bool {
	if n == nil {
		return false
	}
	_, ok := n.ext.Accepted()
	return ok
}

// deflateLevel: compress/flate's fastest. Measured on board-update JSON
// (BenchmarkDeflateBroadcast): the default level's frames were 2-5%
// smaller for 40-75% more CPU per message, which a room of one member
// (a user's own room, a chat) pays in full.
const deflateLevel = flate.BestSpeed

// flateWriters are the gateway's compressors, taken only while one
// message is compressed (a flate.Writer is hundreds of KB: one per
// socket would be the memory the gateway is built not to spend).
var flateWriters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, deflateLevel)
	return w
}}

// deflateTail is what a sync flush ends a message with, which RFC 7692
// leaves off on the wire and the reader puts back.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff}

// deflateFrame is the compressed text frame (RSV1 set) of packet, or nil
// when compressing does not make it smaller.
func deflateFrame(packet []byte) []byte {
	b := bytes.NewBuffer(make([]byte, MaxHeader, MaxHeader+len(packet)/2+16))
	fw := flateWriters.Get().(*flate.Writer)
	fw.Reset(b)
	_, err := fw.Write(packet)
	if err == nil {
		err = fw.Flush()
	}
	flateWriters.Put(fw)
	out := b.Bytes()
	if err != nil || !bytes.HasSuffix(out, deflateTail) || len(out)-MaxHeader-len(deflateTail) >= len(packet) {
		return nil
	}
	f := seal(ws.OpText, out[:len(out)-len(deflateTail)])
	f[0] |= rsv1
	return f
}

// rsv1 is the first header byte's "compressed" bit (RSV1).
const rsv1 = 0x40

// Message is one broadcast for every member: the plain frame, and its
// compressed frame, made once, on the first member that negotiated
// permessage-deflate, and shared by all of them. It is for one goroutine
// (a fan-out worker) at a time.
type Message struct {
	Frame []byte // the plain frame (Seal)
	// Threshold: a packet shorter than this is sent plain to everyone;
	// negative: never compressed.
	Threshold int
	// Seq and Room number the message for an Orderer (QueueOrdered):
	// opaque here, passed on as they are.
	Seq  uint64
	Room string

	done     bool
	deflated []byte // nil: plain to everyone
}

// For is the frame to queue to t: the compressed one for a WebSocket that
// negotiated permessage-deflate (the plain one while it is polling), when
// compressing is worth it.
func (m *Message) For(t Transport) []byte {
	w, ok := t.(*WebSocket)
	if !ok || !w.deflate || m.Threshold < 0 {
		return m.Frame
	}
	if !m.done {
		m.done = true
		if p := Payload(m.Frame); len(p) >= m.Threshold {
			m.deflated = deflateFrame(p)
		}
	}
	if m.deflated != nil {
		return m.deflated
	}
	return m.Frame
}

// Deflated is the compressed frame if one was made (nil otherwise): its
// length is what a member that negotiated compression was sent.
func (m *Message) Deflated() []byte { return m.deflated }

// flateReaders inflate clients' compressed frames, one frame at a time.
var flateReaders = sync.Pool{New: func() any { return flate.NewReader(nil) }}

var errInflateTooLarge = errors.New("inflated message too large")

// inflate decompresses a message's payload, refusing one whose inflated
// size passes max (a small frame that inflates to gigabytes is read no
// further than max+1 bytes).
func inflate(payload []byte, max int) ([]byte, error) {
	fr := flateReaders.Get().(io.ReadCloser)
	defer flateReaders.Put(fr)
	src := io.MultiReader(bytes.NewReader(payload), bytes.NewReader(deflateTail))
	if err := fr.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, err
	}
	out := make([]byte, 0, min(max+1, 4*len(payload)+64))
	for {
		if len(out) == cap(out) {
			// cap(out) <= max+1, and a full max+1 was refused below.
			grown := make([]byte, len(out), min(2*cap(out), max+1))
			out = grown[:copy(grown, out)]
		}
		n, err := fr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > max {
			return nil, errInflateTooLarge
		}
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			// The message ends at its sync flush (the reader runs out of
			// input there) or at a final block. What a truncated stream
			// gave is checked as any packet is (UTF-8, the packet's
			// syntax).
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
