// Command roomstate runs roomcast's roomstate service against an existing NATS.
package main

import (
	"context"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/services/roomstate"
)

func main() {
	var cfg roomstate.Config
	flagenv.Main("roomstate", cfg.Bind, func(ctx context.Context, s flagenv.Service) error {
		cfg.NATSURL, cfg.Store, cfg.Logger = s.Common.NATSURL, s.Store, s.Logger
		return roomstate.Run(ctx, cfg)
	})
}
