package bench

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/roomcast/roomcast/proto"
)

// The shape of a workload, computed the same way by the coordinator (which
// publishes and counts what is expected) and by every worker process (which
// holds a shard of the sockets): socket i is user u<i> with client id c<i>.

func userOf(i int) string   { return "u" + strconv.Itoa(i) }
func clientOf(i int) string { return "c" + strconv.Itoa(i) }

// boardOf is the board socket i watches when the sockets are spread over
// rooms boards.
func boardOf(i, rooms int) string { return "b" + strconv.Itoa(i%rooms) }

// roomsOf are the rooms socket i joins with addToRoom (its user and client
// rooms come with the connection):
//   - fanout and fleet: board-b<i mod R>; messages go to its -tasks room,
//     which shares the board's member list;
//   - idle and storm: three rooms, board-b<i mod R>, org-o<i mod R> and a
//     chat with a user of its own, chat-u<i>-x<i>.
func roomsOf(mode string, i, rooms int) []string {
	b, err := proto.BoardRoom(boardOf(i, rooms))
	if err != nil {
		panic(err) // ids built above are always valid
	}
	if mode == modeFanout || mode == modeResync || mode == modeFleet {
		return []string{b.Name()}
	}
	o, _ := proto.OrgRoom("o" + strconv.Itoa(i%rooms))
	c, _ := proto.ChatRoom(userOf(i), "x"+strconv.Itoa(i))
	return []string{b.Name(), o.Name(), c.Name()}
}

// membersOf counts the sockets of [0, n) whose board is board k.
func membersOf(k, n, rooms int) int {
	if k >= rooms || k >= n {
		return 0
	}
	return (n-1-k)/rooms + 1
}

// mintToken signs an HS256 JWT for user sub, valid for ttl.
func mintToken(secret, sub string, ttl time.Duration) (string, error) {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub,
		"iat": now.Add(-time.Minute).Unix(),
		"exp": now.Add(ttl).Unix(),
	})
	return t.SignedString([]byte(secret))
}

// sourceIP is the loopback address socket i dials from when the sockets are
// spread over n addresses (127.0.0.1 … 127.0.0.n): each address has its own
// ephemeral ports, so more than ~28k sockets fit. nil for n ≤ 1.
func sourceIP(i, n int) net.IP {
	if n <= 1 {
		return nil
	}
	return net.IPv4(127, 0, 0, byte(1+i%n))
}

// benchDiff is the payload of every benchmark message: the publish time in
// ns (the intended one, so a late publisher does not hide its lateness:
// no coordinated omission) and the step it belongs to.
type benchDiff struct {
	TS   int64  `json:"benchTs"`
	Step int64  `json:"benchStep"`
	Pad  string `json:"pad,omitempty"`
}

// benchEnvelope is the update-task envelope of message seq of a step, on
// board k's tasks room.
func benchEnvelope(k int, seq uint64, step int64, ts time.Time, pad string) (proto.Room, proto.Envelope, error) {
	room, err := proto.BoardTasksRoom("b" + strconv.Itoa(k))
	if err != nil {
		return proto.Room{}, proto.Envelope{}, err
	}
	diff, err := json.Marshal(benchDiff{TS: ts.UnixNano(), Step: step, Pad: pad})
	if err != nil {
		return proto.Room{}, proto.Envelope{}, err
	}
	env := proto.Envelope{
		Event:     proto.EventUpdateTask,
		ID:        fmt.Sprintf("t%d_%d", k, seq),
		UpdatedAt: ts.UnixMilli(),
		Diff:      diff,
	}
	return room, env, env.Validate()
}
