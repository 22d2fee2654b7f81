package proto

import (
	"encoding/json"
	"testing"
	"time"
)

// A typical live message: an update with a small diff.
var benchEnvelope = []byte(`{"event":"update-task","id":"0f8fad5b-d9cb-469f-a165-70867728950e","updatedAt":1700000000000,"diff":{"title":"Write the quarterly report","status":"in-progress","assignees":["u1","u2"],"estimate":3.5}}`)

// BenchmarkCheckEnvelope is the gate on the gateway's hot path (the scanner
// decides); the strict reader and a bare json.Valid (what the gateway did
// before the gate) are there to compare.
func BenchmarkCheckEnvelope(b *testing.B) {
	room, err := ParseRoom("board-b1-tasks")
	if err != nil {
		b.Fatal(err)
	}
	at := time.UnixMilli(1_700_000_000_000)
	if _, _, ok := checkFast(room, benchEnvelope, at); !ok {
		b.Fatal("the scanner does not decide the benchmark's envelope")
	}
	b.Run("gate", func(b *testing.B) {
		b.SetBytes(int64(len(benchEnvelope)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := CheckEnvelope(room, benchEnvelope, at); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("strict", func(b *testing.B) {
		b.SetBytes(int64(len(benchEnvelope)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := checkStrict(room, benchEnvelope, at); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		b.SetBytes(int64(len(benchEnvelope)))
		b.ReportAllocs()
		for b.Loop() {
			if !json.Valid(benchEnvelope) {
				b.Fatal("invalid")
			}
		}
	})
}
