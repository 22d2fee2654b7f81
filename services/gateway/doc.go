// Package gateway terminates frontend sockets (Socket.IO v5 over Engine.IO
// v4, on WebSocket or long-polling), authenticates them, keeps the socket
// map and the rooms, maps rooms to NATS subjects with interest-based
// subscriptions, fans broadcasts out and serves the endpoints. The
// transport (the Engine.IO handshake, the WebSocket and long-polling
// connections: all of the platform code and the WebSocket library) is
// internal/engineio; this package holds the sessions above it.
package gateway
