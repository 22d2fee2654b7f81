package proto

import (
	"fmt"
	"strings"
)

// DefaultPrefix is the first token(s) of every room subject.
const DefaultPrefix = "rooms"

// LivePrefix is put before a stored room subject by the stream's RePublish:
// gateways listen on live subjects only, so a broadcast a client sees has
// been stored first. Client rooms are published to their live subject
// directly.
const LivePrefix = "live"

// Subjects maps rooms to NATS subjects under a prefix:
//
//	user-U           rooms.user.U
//	client-C of U    rooms.client.U.C (live only, never stored)
//	org-O            rooms.org.O
//	board-B          rooms.board.B
//	board-B-tasks    rooms.board.B.tasks
//	board-B-sprints  rooms.board.B.sprints
//	chat-A-B         rooms.chat.A.B
//
// The zero Subjects uses DefaultPrefix.
type Subjects struct {
	prefix string
}

// NewSubjects checks prefix (one or more dot-separated tokens of
// [A-Za-z0-9_-]) and returns the mapping under it; "" means DefaultPrefix.
func NewSubjects(prefix string) (Subjects, error) {
	if prefix == "" {
		return Subjects{}, nil
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return Subjects{}, fmt.Errorf("subject prefix %q has an empty token", prefix)
		}
		for i := 0; i < len(tok); i++ {
			if !isIDByte(tok[i]) && tok[i] != '-' {
				return Subjects{}, fmt.Errorf("subject prefix %q has %q: use [A-Za-z0-9_-] and dots", prefix, rune(tok[i]))
			}
		}
	}
	if prefix == LivePrefix || strings.HasPrefix(prefix, LivePrefix+".") {
		return Subjects{}, fmt.Errorf("subject prefix %q must not start with %q, which is where stored messages are re-published", prefix, LivePrefix)
	}
	return Subjects{prefix: prefix}, nil
}

// Prefix is the configured prefix.
func (s Subjects) Prefix() string {
	if s.prefix == "" {
		return DefaultPrefix
	}
	return s.prefix
}

// Publish is the subject a domain service publishes r's events to. For a
// client room, which is never stored, it is the live subject, which names
// the tab's user: a client room without its Owner (parsed from a name
// alone) has no subject, and Publish and Live panic on it.
func (s Subjects) Publish(r Room) string {
	if r.kind == KindClient {
		return s.Live(r)
	}
	return s.stored(r)
}

// Live is the subject gateways subscribe to for r.
func (s Subjects) Live(r Room) string { return LivePrefix + "." + s.stored(r) }

func (s Subjects) stored(r Room) string {
	p := s.Prefix()
	switch r.kind {
	case KindUser:
		return p + ".user." + r.id
	case KindClient:
		if r.peer == "" {
			// A subject without the user would reach every user's tab C.
			panic("proto: subject of client room " + r.name + " without its user: use Room.WithOwner")
		}
		return p + ".client." + r.peer + "." + r.id
	case KindOrg:
		return p + ".org." + r.id
	case KindBoard:
		return p + ".board." + r.id
	case KindBoardTasks:
		return p + ".board." + r.id + ".tasks"
	case KindBoardSprints:
		return p + ".board." + r.id + ".sprints"
	case KindChat:
		return p + ".chat." + r.id + "." + r.peer
	}
	panic("proto: subject of the zero Room")
}

// StreamSubjects are the subjects stream ROOMS stores: every room kind but
// client rooms.
func (s Subjects) StreamSubjects() []string {
	p := s.Prefix()
	return []string{p + ".user.>", p + ".org.>", p + ".board.>", p + ".chat.>"}
}

// LiveChats are the two live subjects that cover every chat of user u:
// live.rooms.chat.U.* and live.rooms.chat.*.U. The caller must have validated
// u (ValidateID).
func (s Subjects) LiveChats(u string) [2]string {
	base := LivePrefix + "." + s.Prefix() + ".chat."
	return [2]string{base + u + ".*", base + "*." + u}
}

// StoredChats are the two stored subjects that cover every chat of user u
// in stream ROOMS: rooms.chat.U.* and rooms.chat.*.U. The caller must have
// validated u (ValidateID).
func (s Subjects) StoredChats(u string) [2]string {
	base := s.Prefix() + ".chat."
	return [2]string{base + u + ".*", base + "*." + u}
}

// LivePersonal are the three wildcards that cover every personal room: each
// user room (live.rooms.user.*), client room (live.rooms.client.*.*) and chat
// (live.rooms.chat.*.*). A gateway that serves personal rooms from these
// holds three subscriptions in all instead of several per socket.
func (s Subjects) LivePersonal() [3]string {
	base := LivePrefix + "." + s.Prefix() + "."
	return [3]string{base + "user.*", base + "client.*.*", base + "chat.*.*"}
}

// LiveAll is the wildcard that matches every live room subject.
func (s Subjects) LiveAll() string { return LivePrefix + "." + s.Prefix() + ".>" }

// RoomOf maps a stored (rooms.…) or live (live.rooms.…) subject back to its
// room. Subjects that are not exactly a room subject are refused.
func (s Subjects) RoomOf(subject string) (Room, error) {
	rest, ok := strings.CutPrefix(subject, LivePrefix+".")
	if !ok {
		rest = subject
	}
	rest, ok = strings.CutPrefix(rest, s.Prefix()+".")
	if !ok {
		return Room{}, fmt.Errorf("subject %q is not under %q", subject, s.Prefix())
	}
	toks := strings.Split(rest, ".")
	bad := func() (Room, error) {
		return Room{}, fmt.Errorf("subject %q is not a room subject", subject)
	}
	if len(toks) < 2 {
		return bad()
	}
	var (
		r   Room
		err error
	)
	switch {
	case len(toks) == 2 && toks[0] == "user":
		r, err = UserRoom(toks[1])
	case len(toks) == 3 && toks[0] == "client":
		r, err = ClientRoom(toks[1], toks[2])
	case len(toks) == 2 && toks[0] == "org":
		r, err = OrgRoom(toks[1])
	case len(toks) == 2 && toks[0] == "board":
		r, err = BoardRoom(toks[1])
	case len(toks) == 3 && toks[0] == "board" && toks[2] == "tasks":
		r, err = BoardTasksRoom(toks[1])
	case len(toks) == 3 && toks[0] == "board" && toks[2] == "sprints":
		r, err = BoardSprintsRoom(toks[1])
	case len(toks) == 3 && toks[0] == "chat":
		if toks[2] <= toks[1] {
			return Room{}, fmt.Errorf("subject %q: chat members must be sorted and distinct", subject)
		}
		r, err = ChatRoom(toks[1], toks[2])
	default:
		return bad()
	}
	if err != nil {
		return Room{}, fmt.Errorf("subject %q: %w", subject, err)
	}
	return r, nil
}
