// Package proto is roomcast's contract, the one place where it is declared:
// room names and their NATS subjects, events and the envelope, the endpoints
// a frontend calls and their argument and result types, error codes, the
// request subjects of roomcast's services, stream ROOMS and the KV buckets,
// and a typed publisher for domain services.
//
// Every other module imports it; no other package spells a room name, a
// subject or an event.
package proto
