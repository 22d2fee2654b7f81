// Package proto is roomcast's contract, the one place where it is declared:
// room names and their NATS subjects, events and the envelope, the endpoints
// a frontend calls and their argument and result types, error codes, the
// request subjects of roomcast's services, stream ROOMS and the KV buckets,
// a typed publisher for domain services, and the envelope gate
// (CheckEnvelope): the one decision on whether a message published to a
// room is a valid envelope, which the gateway, roomstate and sync all apply,
// with updatedAt bounded at MaxFutureSkew (5 minutes) ahead of the message's
// store time.
//
// Every other module imports it; no other package spells a room name, a
// subject or an event.
package proto
