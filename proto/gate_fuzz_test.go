package proto

import (
	"bytes"
	"testing"
	"time"
)

// FuzzCheckEnvelope: wherever the scanner decides, the strict reader (on
// encoding/json) decides the same: the same reason, or the same fields.
func FuzzCheckEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"event":"update-task","id":"t1","updatedAt":1700000000000,"diff":{"title":"x"}}`,
		`{"event":"create-task","id":"t1","updatedAt":1,"data":{"a":[1,2.5e3,-0,true,false,null,"\u00e9\"\\"]},"diff":null}`,
		`{"event":"delete-task","id":"t1","updatedAt":1,"id":"t2"}`,
		`{"event":"delete-task","id":"t1","updatedAt":1e3}`,
		`{"event":"delete-task","id":"t1","updatedAt":-1}`,
		`{"event":"delete-task","id":"t1","updatedAt":"yesterday"}`,
		`{"event":"delete-task","id":"t1","updatedAt":99999999999999}`,
		`{"event":"update-board","id":"b1","updatedAt":1,"diff":{}}`,
		`{"ev\u0065nt":"delete-task","id":"t1","updatedAt":1}`,
		` [1] `, `"x"`, `{}`, `{"a":}`, `{"a":1,}`, "{\"a\":\"\x01\"}", `{"a":01}`,
	} {
		f.Add([]byte(s), uint8(KindBoardTasks))
	}
	f.Add([]byte(`{"event":"new-message","id":"m","updatedAt":2,"data":{}}`), uint8(KindChat))
	f.Add([]byte(`[1,{"x":"y"}]`), uint8(KindClient))
	rooms := map[RoomKind]Room{}
	for _, name := range []string{"user-u1", "client-c1", "org-o1", "board-b1", "board-b1-tasks", "board-b1-sprints", "chat-a-b"} {
		r, err := ParseRoom(name)
		if err != nil {
			f.Fatal(err)
		}
		rooms[r.Kind()] = r
	}
	at := time.UnixMilli(100_000)
	f.Fuzz(func(t *testing.T, b []byte, kind uint8) {
		room := rooms[RoomKind(kind%8)] // 0 is the zero Room
		fc, ferr, ok := checkFast(room, b, at)
		if !ok {
			return
		}
		sc, serr := checkStrict(room, b, at)
		if ReasonOf(ferr) != ReasonOf(serr) || (ferr == nil) != (serr == nil) {
			t.Fatalf("%q in %s: scanner says %v, strict says %v", b, room, ferr, serr)
		}
		if fc.Event != sc.Event || fc.UpdatedAt != sc.UpdatedAt || !bytes.Equal(fc.id, sc.id) {
			t.Fatalf("%q in %s: scanner read %+v, strict read %+v", b, room, fc, sc)
		}
	})
}
