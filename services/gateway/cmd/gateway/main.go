// Command gateway runs a roomcast gateway against an existing NATS.
package main

import (
	"context"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/services/gateway"
)

func main() {
	flagenv.KeepSysmonAwake()
	flagenv.GCPercent(flagenv.GatewayGCPercent)
	var cfg gateway.Config
	flagenv.Main("gateway", cfg.Bind, func(ctx context.Context, s flagenv.Service) error {
		cfg.NATSURL, cfg.Store, cfg.Logger = s.Common.NATSURL, s.Store, s.Logger
		cfg.RecoveryTTL = s.Common.RecoveryTTL
		return gateway.Run(ctx, cfg)
	})
}
