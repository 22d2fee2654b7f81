package backfill

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Run serves until ctx is done, then drains and returns.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger.With().Str("service", "sync").Logger()
	nc, err := nats.Connect(cfg.NATSURL, append([]nats.Option{
		nats.Name("roomcast-sync"),
		nats.MaxReconnects(-1),
	}, cfg.NATSOptions...)...)
	if err != nil {
		return fmt.Errorf("sync: connect to NATS at %s: %w", cfg.NATSURL, err)
	}
	defer nc.Close()
	log.Info().Msg("sync started")
	<-ctx.Done()
	err = nc.Drain()
	log.Info().Msg("sync stopped")
	return err
}
