// Command sync runs roomcast's sync service against an existing NATS.
package main

import (
	"context"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/services/sync/backfill"
)

func main() {
	var cfg backfill.Config
	flagenv.Main("sync", cfg.Bind, func(ctx context.Context, s flagenv.Service) error {
		cfg.NATSURL, cfg.Store, cfg.Logger = s.Common.NATSURL, s.Store, s.Logger
		return backfill.Run(ctx, cfg)
	})
}
