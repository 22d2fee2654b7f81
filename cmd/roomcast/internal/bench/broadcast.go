package bench

import (
	"bytes"
	"math"
)

// broadcastFields are what the benchmark reads from a broadcast frame.
type broadcastFields struct {
	ts, step       int64
	seq, prevSeq   int64
	hasTS, hasSeqs bool
	arrival        int64 // when it reached the socket (Unix ns, the kernel's stamp); 0: not stamped
}

// parseBroadcast picks the benchmark's fields out of a
// 42["broadcast",{…}] message by searching for their keys, without decoding
// the JSON: the client's CPU is the tool's limit at high rates.
func parseBroadcast(msg []byte) (broadcastFields, bool) {
	var f broadcastFields
	if !bytes.HasPrefix(msg, []byte(`42["broadcast",`)) {
		return f, false
	}
	var ok1, ok2 bool
	f.ts, f.hasTS = intAfter(msg, keyTS)
	f.step, _ = intAfter(msg, keyStep)
	f.seq, ok1 = intAfter(msg, keySeq)
	f.prevSeq, ok2 = intAfter(msg, keyPrevSeq)
	f.hasSeqs = ok1 && ok2
	return f, true
}

// parsePublication picks the benchmark's fields out of a Centrifugo
// publication push, {"push":{"channel":"…","pub":{"data":{…}}}}, the same
// way. Centrifugo numbers publications only in channels with history, which
// the benchmark's have not: no seq fields, no gap count.
func parsePublication(msg []byte) (broadcastFields, bool) {
	var f broadcastFields
	if !bytes.HasPrefix(msg, []byte(`{"push":{"channel":`)) || !bytes.Contains(msg, []byte(`"pub":{`)) {
		return f, false
	}
	f.ts, f.hasTS = intAfter(msg, keyTS)
	f.step, _ = intAfter(msg, keyStep)
	return f, true
}

var (
	keyTS      = []byte(`"benchTs":`)
	keyStep    = []byte(`"benchStep":`)
	keySeq     = []byte(`"seq":`)
	keyPrevSeq = []byte(`"prevSeq":`)
)

// intAfter parses the non-negative integer that follows the last occurrence
// of key in b.
func intAfter(b, key []byte) (int64, bool) {
	i := bytes.LastIndex(b, key)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	var v int64
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		d := int64(b[n] - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, false // out of range: not one of ours
		}
		v = v*10 + d
		n++
	}
	return v, n > 0
}
