// Package backfill is the sync service: it answers "what changed in this room since T" (sync.changes) and chat backfill (sync.chat) from stream ROOMS.
package backfill
