package proto

//go:generate go test -run TestContractJSON -update .

// ContractDoc is the contract in a form other languages can check themselves
// against: the TypeScript client's test reads contract.json (written from
// Contract by `go generate`) and compares it with its own constants, so the
// two cannot drift apart silently.
type ContractDoc struct {
	// IncomingEvent and OutgoingEvent are the Socket.IO event names a
	// frontend emits and listens to.
	IncomingEvent string `json:"incomingEvent"`
	OutgoingEvent string `json:"outgoingEvent"`
	// Events are the seed's events in declaration order.
	Events []ContractEvent `json:"events"`
	// Endpoints are the endpoint names a frontend may call.
	Endpoints []string `json:"endpoints"`
	// ErrorCodes are the codes a failed ack may carry.
	ErrorCodes []string `json:"errorCodes"`
	// RoomKinds are the kinds of room with their name patterns.
	RoomKinds []ContractRoomKind `json:"roomKinds"`
	// ID describes a valid id (user, client, org, board, chat member).
	ID ContractID `json:"id"`
}

// ContractEvent is one event: what it does and where it may be published.
type ContractEvent struct {
	Name      string   `json:"name"`
	Op        string   `json:"op"`
	RoomKinds []string `json:"roomKinds"`
}

// ContractRoomKind is one kind of room. Pattern spells its name with
// placeholders: <id> for one id; <a> and <b> for a chat's two members.
// Subject is where a domain service publishes to it (default prefix), with
// the same placeholders and <user> for the user a client room belongs to.
type ContractRoomKind struct {
	Kind    string `json:"kind"`
	Pattern string `json:"pattern"`
	Subject string `json:"subject"`
	Stored  bool   `json:"stored"`
}

// ContractID says what an id may be.
type ContractID struct {
	MaxLen int    `json:"maxLen"`
	Regexp string `json:"regexp"`
}

// roomKinds lists every kind, in declaration order.
var roomKinds = []RoomKind{KindUser, KindClient, KindOrg, KindBoard, KindBoardTasks, KindBoardSprints, KindChat}

// Contract describes the contract from the declarations in this package.
func Contract() ContractDoc {
	c := ContractDoc{
		IncomingEvent: IncomingEvent,
		OutgoingEvent: OutgoingEvent,
		ID: ContractID{
			MaxLen: MaxIDLen,
			Regexp: `^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[A-Za-z0-9_]{1,64})$`,
		},
	}
	for _, e := range Events {
		ce := ContractEvent{Name: string(e), Op: e.Op().String()}
		for _, k := range e.RoomKinds() {
			ce.RoomKinds = append(ce.RoomKinds, k.String())
		}
		c.Events = append(c.Events, ce)
	}
	for _, n := range Endpoints {
		c.Endpoints = append(c.Endpoints, string(n))
	}
	for _, code := range Codes {
		c.ErrorCodes = append(c.ErrorCodes, string(code))
	}
	for _, k := range roomKinds {
		var r Room
		switch k {
		case KindChat:
			r = newRoom(k, "<a>", "<b>")
		case KindClient:
			r = newRoom(k, "<id>", "<user>")
		default:
			r = newRoom(k, "<id>", "")
		}
		c.RoomKinds = append(c.RoomKinds, ContractRoomKind{Kind: k.String(), Pattern: r.Name(), Subject: Subjects{}.Publish(r), Stored: k.Stored()})
	}
	return c
}
