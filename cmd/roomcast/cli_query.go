package main

import (
	"context"
	"encoding/json"
	"io"

	"github.com/roomcast/roomcast/proto"
)

// stateCmd: roomcast state ROOM — the room's state from roomstate.get.
func stateCmd(ctx context.Context, args []string, out, errOut io.Writer) error {
	c := newOpsCmd("state", "state [flags] ROOM", out, errOut)
	r, err := c.parseRoom(args)
	if err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	defer c.close()
	return c.request(ctx, proto.SubjectRoomStateGet, proto.RoomArgs{RoomName: r.Name()})
}

// historyCmd is changes and chat: a room's history since a cursor, from the
// sync service.
func historyCmd(name, subject string) func(context.Context, []string, io.Writer, io.Writer) error {
	return func(ctx context.Context, args []string, out, errOut io.Writer) error {
		c := newOpsCmd(name, name+" [flags] ROOM (-since MS | -after-seq N)", out, errOut)
		var since, afterSeq, limit int
		c.fs.IntVar(&since, "since", -1, "publisher time (updatedAt), ms since the Unix epoch")
		c.fs.IntVar(&afterSeq, "after-seq", -1, "stream sequence to start after")
		c.fs.IntVar(&limit, "limit", 0, "at most this many entries (0: the service's default)")
		r, err := c.parseRoom(args)
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
		return c.request(ctx, subject, proto.ChangesArgs{RoomName: r.Name(), Cursor: cur, Limit: limit})
	}
}

// presenceCmd: roomcast presence USER… — whether each user is active.
func presenceCmd(ctx context.Context, args []string, out, errOut io.Writer) error {
	c := newOpsCmd("presence", "presence [flags] USER...", out, errOut)
	users, err := c.parse(args, -1)
	if err != nil {
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
	return c.request(ctx, proto.SubjectPresenceGet, proto.PresenceArgs{UserIDs: users})
}

// revokeCmd: roomcast revoke USER — disconnect every socket of USER on every
// gateway.
func revokeCmd(ctx context.Context, args []string, out, errOut io.Writer) error {
	c := newOpsCmd("revoke", "revoke [flags] USER", out, errOut)
	rest, err := c.parse(args, 1)
	if err != nil {
		return err
	}
	if err := proto.ValidateID(rest[0]); err != nil {
		return usageError{err}
	}
	if err := c.connect(); err != nil {
		return err
	}
	defer c.close()
	if err := c.publish(ctx, proto.RevokeSubject(rest[0]), nil); err != nil {
		return err
	}
	return c.printJSON(map[string]string{"revoked": rest[0]})
}

// kickCmd: roomcast kick ROOM USER — remove USER's sockets from ROOM on every
// gateway.
func kickCmd(ctx context.Context, args []string, out, errOut io.Writer) error {
	c := newOpsCmd("kick", "kick [flags] ROOM USER", out, errOut)
	rest, err := c.parse(args, 2)
	if err != nil {
		return err
	}
	r, err := room(rest[0])
	if err != nil {
		return err
	}
	if err := proto.ValidateID(rest[1]); err != nil {
		return usageError{err}
	}
	if err := c.connect(); err != nil {
		return err
	}
	defer c.close()
	b, _ := json.Marshal(proto.KickRequest{RoomName: r.Name(), UserID: rest[1]})
	if err := c.publish(ctx, proto.SubjectKick, b); err != nil {
		return err
	}
	return c.printJSON(map[string]string{"kicked": rest[1], "room": r.Name()})
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
