// Package roomstate keeps each room's lastBroadcastTimestamp and latest seq in KV ROOM_STATE, from a durable consumer on stream ROOMS, and answers roomstate.get.
package roomstate
