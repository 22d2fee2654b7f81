package proto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Request subjects of roomcast's own services (nats.go micro services, so
// $SRV.PING, $SRV.INFO and $SRV.STATS discover them) and of the questions
// gateways ask domain services.
const (
	// Service names for micro.AddService.
	ServiceRoomState = "roomstate"
	ServiceSync      = "sync"
	ServicePresence  = "presence"

	SubjectRoomStateGet     = "roomstate.get"     // RoomArgs → RoomState or null
	SubjectRoomStateGetMany = "roomstate.getmany" // RoomStatesArgs → RoomStatesResult
	SubjectSyncChanges      = "sync.changes"      // HistoryRequest (or ChangesArgs) → ChangesResult
	SubjectSyncChat         = "sync.chat"         // HistoryRequest (or ChatArgs) → ChatResult
	SubjectPresenceGet      = "presence.get"      // PresenceArgs → PresenceResult

	// SubjectAuthzJoin is answered by a domain service: AuthzJoinRequest →
	// AuthzJoinReply. No answer in time means deny.
	SubjectAuthzJoin = "authz.join"

	// SubjectKick is published by domain services when a membership is
	// removed: KickRequest.
	SubjectKick = "ctl.rooms.kick"

	// SubjectRevokeAll matches every revocation, RevokeSubject one user's.
	SubjectRevokeAll = "ctl.users.*.revoke"
)

// RevokeSubject is where a domain service publishes (any payload) to
// disconnect every socket of user u on every gateway: password changed,
// account closed.
func RevokeSubject(u string) string { return "ctl.users." + u + ".revoke" }

// UserOfRevokeSubject is the user a revocation subject names, "" if subject is
// not one.
func UserOfRevokeSubject(subject string) string {
	rest, ok := strings.CutPrefix(subject, "ctl.users.")
	if !ok {
		return ""
	}
	u, ok := strings.CutSuffix(rest, ".revoke")
	if !ok || ValidateID(u) != nil {
		return ""
	}
	return u
}

// MaxBatchRooms bounds a roomstate.getmany request.
const MaxBatchRooms = 1000

// RoomStatesArgs ask for many rooms' states at once.
type RoomStatesArgs struct {
	RoomNames []string `json:"roomNames"`
}

// RoomStatesResult maps each asked room name to its state, null when the room
// was never broadcast to (or its state expired).
type RoomStatesResult struct {
	States map[string]*RoomState `json:"states"`
}

// HistoryRequest is what a gateway sends to sync.changes and sync.chat: the
// client's arguments (ChatArgs has the same fields as ChangesArgs) and the
// authenticated user who asks, so that sync shares its reads fairly between
// users. A client never sets UserID (its endpointArgs are ChangesArgs or
// ChatArgs, which have no such field); a request without one (the operator
// CLI) shares one anonymous budget.
type HistoryRequest struct {
	ChangesArgs
	UserID string `json:"userId,omitempty"`
}

// AuthzJoinRequest asks a domain service whether a user may join a room (and
// so read its state, changes and messages).
type AuthzJoinRequest struct {
	UserID   string `json:"userId"`
	RoomName string `json:"roomName"`
}

// AuthzJoinReply is the answer; anything but {"allow":true} denies
// (ParseAuthzJoinReply).
type AuthzJoinReply struct {
	Allow bool `json:"allow"`
}

// The two answers ParseAuthzJoinReply knows, compacted.
var (
	authzYes = []byte(`{"allow":true}`)
	authzNo  = []byte(`{"allow":false}`)
)

// ParseAuthzJoinReply reads an authz.join answer strictly: only
// {"allow":true} grants access. JSON whitespace between tokens is ignored
// (Python's json.dumps writes {"allow": true}); nothing else is: a key
// spelled otherwise ({"Allow":true}), a repeated key
// ({"allow":false,"allow":true}), an extra field, a value that is not the
// literal true. encoding/json would grant all of these, and a reply its
// author never meant as yes must not open a room. An answer that is neither
// {"allow":true} nor {"allow":false} denies and returns an error saying so,
// for the operator's log.
func ParseAuthzJoinReply(data []byte) (allow bool, err error) {
	if bytes.Equal(data, authzYes) {
		return true, nil
	}
	if bytes.Equal(data, authzNo) {
		return false, nil
	}
	var compact bytes.Buffer
	if len(data) <= 4*len(authzNo) && json.Compact(&compact, data) == nil {
		switch {
		case bytes.Equal(compact.Bytes(), authzYes):
			return true, nil
		case bytes.Equal(compact.Bytes(), authzNo):
			return false, nil
		}
	}
	return false, fmt.Errorf("%s answered %q, which is neither {\"allow\":true} nor {\"allow\":false}: denied", SubjectAuthzJoin, truncateBytes(data, 64))
}

func truncateBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// KickRequest removes userId's sockets from roomName on every gateway.
type KickRequest struct {
	RoomName string `json:"roomName"`
	UserID   string `json:"userId"`
}

// PresenceArgs ask whether users are active.
type PresenceArgs struct {
	UserIDs []string `json:"userIds"`
}

// PresenceResult maps each asked user to whether any of their sockets, on any
// gateway, last said updateClient {isActive:true}.
type PresenceResult struct {
	Active map[string]bool `json:"active"`
}
