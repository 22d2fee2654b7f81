package proto

import (
	"fmt"
	"strings"
)

// RoomKind tells what a room tracks, and so who may join it and which events
// may be published to it.
type RoomKind uint8

// The room kinds of the design ("Room strategy" in the seed).
const (
	KindUser         RoomKind = iota + 1 // user-<U>: every socket of U
	KindClient                           // client-<C>: one tab of one user, server-managed
	KindOrg                              // org-<O>
	KindBoard                            // board-<B>
	KindBoardTasks                       // board-<B>-tasks, shares board-<B>'s sockets
	KindBoardSprints                     // board-<B>-sprints, shares board-<B>'s sockets
	KindChat                             // chat-<A>-<B>, A < B
)

var kindNames = [...]string{
	KindUser:         "user",
	KindClient:       "client",
	KindOrg:          "org",
	KindBoard:        "board",
	KindBoardTasks:   "board-tasks",
	KindBoardSprints: "board-sprints",
	KindChat:         "chat",
}

func (k RoomKind) String() string {
	if k == 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("RoomKind(%d)", uint8(k))
	}
	return kindNames[k]
}

// Stored reports whether messages to rooms of this kind go through stream
// ROOMS. Client rooms are ephemeral: published straight to their live subject.
func (k RoomKind) Stored() bool { return k != KindClient && k != 0 }

// Limits on identifiers and names. A name longer than MaxRoomNameLen is
// refused before it is looked at.
const (
	MaxIDLen       = 64
	MaxRoomNameLen = len("chat-") + 2*MaxIDLen + 1
)

// Room is a validated room. The zero Room is no room; every other value was
// built by a constructor or ParseRoom, so its name and subjects are safe to use
// as NATS subject tokens.
type Room struct {
	kind RoomKind
	id   string // user, client, org or board id; the first chat member
	peer string // chat: the second member, id < peer; client: the tab's user ("" when unknown)
	name string
}

// Kind is the room's kind.
func (r Room) Kind() RoomKind { return r.kind }

// ID is the user, client, organization or board the room belongs to; for a
// chat, its first (smaller) member.
func (r Room) ID() string { return r.id }

// Members are the two users of a chat room, sorted; empty for other kinds.
func (r Room) Members() []string {
	if r.kind != KindChat {
		return nil
	}
	return []string{r.id, r.peer}
}

// Name is the room's canonical name, e.g. "board-b1-tasks". A client room's
// name leaves its user out (client-<C>: what the tab sees as a broadcast's
// destination); Key tells two users' client rooms apart.
func (r Room) Name() string { return r.name }

// Owner is the user a client room belongs to, "" for a client room parsed
// from its name alone and for every other kind.
func (r Room) Owner() string {
	if r.kind != KindClient {
		return ""
	}
	return r.peer
}

// Key identifies the room among all rooms: its Name, but for a client room
// with an owner, its name and its user (client-<C>.<U>), so two users
// presenting the same clientId hold two rooms. A '.' is in no id, so no
// other room's key looks like it.
func (r Room) Key() string {
	if r.kind == KindClient && r.peer != "" {
		return r.name + "." + r.peer
	}
	return r.name
}

// WithOwner is client room r as user u's: the room a socket of u holding
// tab r.ID() is in. Subjects.Publish and Live need it: a client room's
// subject carries its user (live.rooms.client.<U>.<C>).
func (r Room) WithOwner(u string) (Room, error) {
	if r.kind != KindClient {
		return Room{}, fmt.Errorf("%s is not a client room: only client rooms have an owner", r.name)
	}
	return ClientRoom(u, r.id)
}

func (r Room) String() string { return r.name }

// IsZero reports whether r is the zero Room.
func (r Room) IsZero() bool { return r.kind == 0 }

// Parent is the room whose socket list r shares (the seed's
// includeSocketIdsInRoom): board-<B> for board-<B>-tasks and
// board-<B>-sprints, r itself otherwise.
func (r Room) Parent() Room {
	if r.kind == KindBoardTasks || r.kind == KindBoardSprints {
		return newRoom(KindBoard, r.id, "")
	}
	return r
}

// Children are the rooms that share r's socket list: a board's tasks and
// sprints rooms. Nil for every other kind.
func (r Room) Children() []Room {
	if r.kind != KindBoard {
		return nil
	}
	return []Room{newRoom(KindBoardTasks, r.id, ""), newRoom(KindBoardSprints, r.id, "")}
}

// HasMember reports whether user u may be in the room by its name alone:
// u's own user room, or a chat u is one of the two members of.
func (r Room) HasMember(u string) bool {
	switch r.kind {
	case KindUser:
		return r.id == u
	case KindChat:
		return r.id == u || r.peer == u
	}
	return false
}

func newRoom(k RoomKind, id, peer string) Room {
	var name string
	switch k {
	case KindUser:
		name = "user-" + id
	case KindClient:
		name = "client-" + id
	case KindOrg:
		name = "org-" + id
	case KindBoard:
		name = "board-" + id
	case KindBoardTasks:
		name = "board-" + id + "-tasks"
	case KindBoardSprints:
		name = "board-" + id + "-sprints"
	case KindChat:
		name = "chat-" + id + "-" + peer
	}
	return Room{kind: k, id: id, peer: peer, name: name}
}

func oneIDRoom(k RoomKind, id string) (Room, error) {
	if err := ValidateID(id); err != nil {
		return Room{}, fmt.Errorf("%s room: %w", k, err)
	}
	return newRoom(k, id, ""), nil
}

// UserRoom is user-<u>.
func UserRoom(u string) (Room, error) { return oneIDRoom(KindUser, u) }

// ClientRoom is client-<c>, the tab c of user u.
func ClientRoom(u, c string) (Room, error) {
	if err := ValidateID(u); err != nil {
		return Room{}, fmt.Errorf("client room: user: %w", err)
	}
	r, err := oneIDRoom(KindClient, c)
	if err != nil {
		return Room{}, err
	}
	r.peer = u
	return r, nil
}

// OrgRoom is org-<o>.
func OrgRoom(o string) (Room, error) { return oneIDRoom(KindOrg, o) }

// BoardRoom is board-<b>.
func BoardRoom(b string) (Room, error) { return oneIDRoom(KindBoard, b) }

// BoardTasksRoom is board-<b>-tasks.
func BoardTasksRoom(b string) (Room, error) { return oneIDRoom(KindBoardTasks, b) }

// BoardSprintsRoom is board-<b>-sprints.
func BoardSprintsRoom(b string) (Room, error) { return oneIDRoom(KindBoardSprints, b) }

// ChatRoom is the chat between users a and b, in either order: ChatRoom("b",
// "a") and ChatRoom("a", "b") are the same room, chat-a-b.
func ChatRoom(a, b string) (Room, error) {
	if err := ValidateID(a); err != nil {
		return Room{}, fmt.Errorf("chat room: first member: %w", err)
	}
	if err := ValidateID(b); err != nil {
		return Room{}, fmt.Errorf("chat room: second member: %w", err)
	}
	if a == b {
		return Room{}, fmt.Errorf("chat room: members are the same user %q; a chat needs two", a)
	}
	if b < a {
		a, b = b, a
	}
	return newRoom(KindChat, a, b), nil
}

// ParseRoom parses a room name strictly. Chat members may come in either
// order; the result's Name is canonical (sorted). Anything that is not
// exactly one of the design's room names is refused with the reason.
func ParseRoom(name string) (Room, error) {
	if name == "" {
		return Room{}, fmt.Errorf("room name is empty")
	}
	if len(name) > MaxRoomNameLen {
		return Room{}, fmt.Errorf("room name is %d bytes long, the limit is %d", len(name), MaxRoomNameLen)
	}
	prefix, rest, ok := strings.Cut(name, "-")
	if !ok {
		return Room{}, fmt.Errorf("room name %q has no kind: want user-, client-, org-, board- or chat-", name)
	}
	switch prefix {
	case "user":
		return UserRoom(rest)
	case "client":
		// Its user is not in its name: Owner is "" until WithOwner.
		return oneIDRoom(KindClient, rest)
	case "org":
		return OrgRoom(rest)
	case "board":
		if id, ok := strings.CutSuffix(rest, "-tasks"); ok && ValidateID(id) == nil {
			return newRoom(KindBoardTasks, id, ""), nil
		}
		if id, ok := strings.CutSuffix(rest, "-sprints"); ok && ValidateID(id) == nil {
			return newRoom(KindBoardSprints, id, ""), nil
		}
		return BoardRoom(rest)
	case "chat":
		a, b, err := splitChat(rest)
		if err != nil {
			return Room{}, err
		}
		return ChatRoom(a, b)
	}
	return Room{}, fmt.Errorf("room name %q has unknown kind %q: want user, client, org, board or chat", name, prefix)
}

// splitChat splits "<A>-<B>". An id holds a '-' only when it is a UUID, so
// the split is unambiguous: a UUID first member is exactly 36 bytes long.
func splitChat(rest string) (string, string, error) {
	if len(rest) > uuidLen && rest[uuidLen] == '-' && isUUID(rest[:uuidLen]) {
		return rest[:uuidLen], rest[uuidLen+1:], nil
	}
	a, b, ok := strings.Cut(rest, "-")
	if !ok {
		return "", "", fmt.Errorf("chat room %q needs two members: chat-<A>-<B>", "chat-"+rest)
	}
	return a, b, nil
}

const uuidLen = 36

// ValidateID checks a user, client, organization or board id: a canonical
// (lower-case) UUID, or 1 to 64 of [A-Za-z0-9_]. These are the only ids that
// can become NATS subject tokens without changing what a subject matches.
func ValidateID(id string) error {
	if id == "" {
		return fmt.Errorf("id is empty")
	}
	if isUUID(id) {
		return nil
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("id is %d bytes long, the limit is %d", len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !isIDByte(id[i]) {
			return fmt.Errorf("id %q has %q at byte %d: ids are lower-case UUIDs or [A-Za-z0-9_]", id, rune(id[i]), i)
		}
	}
	return nil
}

func isIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

func isUUID(s string) bool {
	if len(s) != uuidLen {
		return false
	}
	for i := 0; i < uuidLen; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}
