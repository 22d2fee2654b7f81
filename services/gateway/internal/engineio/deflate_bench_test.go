package engineio

import (
	"fmt"
	"testing"
)

// BenchmarkDeflateBroadcast: one broadcast to 100 WebSocket members, as
// the fan-out does it: the frame built, then queued to each (Message.For
// and Queue). plain: no member negotiated compression; deflate: all did
// (compressed once, the one frame queued to each). wire-B/member is what
// each member is sent; ns/op is per message, the writes' system calls
// aside (the same count either way, make bench measures them).
func BenchmarkDeflateBroadcast(b *testing.B) {
	const members = 100
	for _, size := range []int{300, 600, 3000} {
		packet := broadcastPacket(size)
		for _, deflate := range []bool{false, true} {
			name := fmt.Sprintf("%dB/plain", size)
			if deflate {
				name = fmt.Sprintf("%dB/deflate", size)
			}
			b.Run(name, func(b *testing.B) {
				opts := &Options{SendQueueBytes: 1 << 30}
				ws := make([]WebSocket, members)
				for i := range ws {
					ws[i].opts, ws[i].deflate = opts, deflate
				}
				var wire int
				b.ReportAllocs()
				for b.Loop() {
					m := Message{Frame: sealed(packet), Threshold: 0}
					for i := range ws {
						w := &ws[i]
						f := m.For(w)
						w.Queue(f)
						wire = len(f)
					}
					for i := range ws {
						ws[i].queue, ws[i].queued = ws[i].queue[:0], 0
					}
				}
				b.ReportMetric(float64(wire), "wire-B/member")
				b.ReportMetric(float64(len(sealed(packet))), "plain-B/member")
			})
		}
	}
}
