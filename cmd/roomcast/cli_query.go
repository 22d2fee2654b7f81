package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/roomcast/roomcast/proto"
)

// stateCommand: roomcast state ROOM — the room's state from roomstate.get.
func stateCommand(out, errOut io.Writer) *cobra.Command {
	c := newOpsCmd(0, out, errOut)
	return c.command(&cobra.Command{
		Use:     "state ROOM",
		Short:   "the room's lastBroadcastTimestamp and seq (roomstate.get)",
		Example: "  roomcast state board-b1-tasks",
		Args:    usageArgs("ROOM", cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := c.readyRoom(args[0])
			if err != nil {
				return err
			}
			if err := c.connect(); err != nil {
				return err
			}
			defer c.close()
			return c.request(cmd.Context(), proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: r.Name()})
		},
	})
}

// historyCommand is changes and chat: a room's history since a cursor, from
// the sync service.
func historyCommand(name, subject string, out, errOut io.Writer) *cobra.Command {
	c := newOpsCmd(0, out, errOut)
	var since, afterSeq, limit int
	short := "what changed in a room since a cursor (" + subject + ")"
	example := "  roomcast changes board-b1-tasks --after-seq 0\n  roomcast changes board-b1-tasks --since 1764262800000 --limit 50"
	if name == "chat" {
		short = "a chat room's messages since a cursor (" + subject + ")"
		example = "  roomcast chat chat-alice-bob --after-seq 0"
	}
	cmd := c.command(&cobra.Command{
		Use:     name + " ROOM (--since MS | --after-seq N)",
		Short:   short,
		Example: example,
		Args:    usageArgs("ROOM", cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := c.readyRoom(args[0])
			if err != nil {
				return err
			}
			var cur proto.Cursor
			if since >= 0 {
				s := int64(since)
				cur.Since = &s
			}
			if afterSeq >= 0 {
				a := uint64(afterSeq)
				cur.AfterSeq = &a
			}
			if err := cur.Validate(); err != nil {
				return usageError{err}
			}
			if err := c.connect(); err != nil {
				return err
			}
			defer c.close()
			return c.request(cmd.Context(), subject, proto.ChangesArgs{RoomName: r.Name(), Cursor: cur, Limit: limit})
		},
	})
	cmd.Flags().IntVar(&since, "since", -1, "publisher time (updatedAt), ms since the Unix epoch")
	cmd.Flags().IntVar(&afterSeq, "after-seq", -1, "stream sequence to start after")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many entries (0: the service's default)")
	return cmd
}

// presenceCommand: roomcast presence USER… — whether each user is active.
func presenceCommand(out, errOut io.Writer) *cobra.Command {
	c := newOpsCmd(0, out, errOut)
	return c.command(&cobra.Command{
		Use:     "presence USER...",
		Short:   "whether users are active (presence.get): true once a socket of theirs has called updateClient",
		Example: "  roomcast presence dev alice",
		Args:    usageArgs("one USER or more", cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, users []string) error {
			if err := c.ready(); err != nil {
				return err
			}
			for _, u := range users {
				if err := proto.ValidateID(u); err != nil {
					return usageError{err}
				}
			}
			if err := c.connect(); err != nil {
				return err
			}
			defer c.close()
			return c.request(cmd.Context(), proto.SubjectPresenceGet, proto.PresenceArgs{UserIDs: users})
		},
	})
}

// revokeCommand: roomcast revoke USER — record the revoke in REVOCATIONS,
// then disconnect every socket of USER on every gateway. Recording it first
// makes the revoke stick even when no gateway is running to hear it: a
// gateway started later loads it.
func revokeCommand(out, errOut io.Writer) *cobra.Command {
	c := newOpsCmd(readsRevocations, out, errOut)
	return c.command(&cobra.Command{
		Use:   "revoke USER",
		Short: "refuse USER's tokens issued until now, and disconnect USER's sockets, on every gateway",
		Long: `revoke records now as USER's revoke time in KV REVOCATIONS (creating the
bucket if it is missing), then publishes ctl.users.USER.revoke with that
time: every gateway disconnects USER's sockets and refuses any token of USER
issued (iat) at or before it, or without an iat, for --max-token-lifetime.
Tokens issued afterwards connect. To undo: nats kv del REVOCATIONS USER.`,
		Example: "  roomcast revoke alice",
		Args:    usageArgs("USER", cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.ready(); err != nil {
				return err
			}
			if err := proto.ValidateID(args[0]); err != nil {
				return usageError{err}
			}
			if err := c.connect(); err != nil {
				return err
			}
			defer c.close()
			at := time.Now()
			recorded := c.recordRevocation(cmd.Context(), args[0], at)
			b, _ := json.Marshal(proto.Revocation{RevokedAt: at.UnixMilli()})
			// Published even when the record failed: the sockets close, and
			// every gateway that hears it records it too.
			if err := c.publish(cmd.Context(), proto.RevokeSubject(args[0]), b); err != nil {
				return err
			}
			if recorded != nil {
				return recorded
			}
			return c.printJSON(map[string]any{"revoked": args[0], "revokedAt": at.UnixMilli()})
		},
	})
}

// kickCommand: roomcast kick ROOM USER — remove USER's sockets from ROOM on
// every gateway.
func kickCommand(out, errOut io.Writer) *cobra.Command {
	c := newOpsCmd(0, out, errOut)
	return c.command(&cobra.Command{
		Use:     "kick ROOM USER",
		Short:   "remove USER's sockets from ROOM on every gateway",
		Example: "  roomcast kick board-b1 alice",
		Args:    usageArgs("ROOM USER", cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := c.readyRoom(args[0])
			if err != nil {
				return err
			}
			if err := proto.ValidateID(args[1]); err != nil {
				return usageError{err}
			}
			if err := c.connect(); err != nil {
				return err
			}
			defer c.close()
			b, _ := json.Marshal(proto.KickRequest{RoomName: r.Name(), UserID: args[1]})
			if err := c.publish(cmd.Context(), proto.SubjectKick, b); err != nil {
				return err
			}
			return c.printJSON(map[string]string{"kicked": args[1], "room": r.Name()})
		},
	})
}

// recordRevocation writes u's revoke at time at into REVOCATIONS, creating
// the bucket when it is missing.
func (c *opsCmd) recordRevocation(ctx context.Context, u string, at time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	kv, err := c.js.KeyValue(ctx, proto.BucketRevocations)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = c.js.CreateOrUpdateKeyValue(ctx, c.store.RevocationsBucket())
	}
	if err != nil {
		return fmt.Errorf("revoke not recorded in %s (the gateways that hear it record it): %w", proto.BucketRevocations, err)
	}
	return proto.RecordRevocation(ctx, kv, u, at)
}

// readyRoom checks the shared settings and parses a room name argument.
func (c *opsCmd) readyRoom(name string) (proto.Room, error) {
	if err := c.ready(); err != nil {
		return proto.Room{}, err
	}
	return room(name)
}

// publish sends a core NATS message and waits until the server has it.
func (c *opsCmd) publish(ctx context.Context, subject string, data []byte) error {
	if err := c.nc.Publish(subject, data); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.nc.FlushWithContext(ctx)
}
