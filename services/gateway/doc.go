// Package gateway terminates frontend sockets (Socket.IO v5 over Engine.IO v4
// on WebSocket), authenticates them, keeps the socket map and the rooms, maps
// rooms to NATS subjects with interest-based subscriptions, fans broadcasts
// out and serves the endpoints.
package gateway
