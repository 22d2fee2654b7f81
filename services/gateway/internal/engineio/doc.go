// Package engineio is the gateway's transport layer: the Engine.IO v4
// handshake (Origin, EIO version, draining, the token's sources, the open
// packet) with one check for every upgrade path, and the WebSocket
// transport (gobwas/ws framing, the epoll poller, the send queue and its
// non-blocking writev). Every unsafe, syscall and gobwas/ws import of the
// gateway is here; the Socket.IO session above (rooms, endpoints, auth,
// fan-out) sees a Transport (queue a frame, write, close) and is called
// back through a Handler (a budget per frame, a packet, an end).
//
// A frame is an encoded Engine.IO packet inside its WebSocket frame header,
// built once and shared by every socket it goes to (a broadcast is encoded
// once per message); a transport without WebSocket framing (long-polling)
// takes the packet after the header (Payload). With permessage-deflate a
// broadcast also has one compressed frame, made once and shared by every
// socket that negotiated it (Message); sockets keep no compression state.
package engineio
