package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/roomcast/roomcast/process/flagenv"
	"github.com/roomcast/roomcast/proto"
	"github.com/roomcast/roomcast/services/gateway"
)

// tokenCommand: roomcast token USER — a token signed with the configured
// secret, or with the development secret serve keeps in its data directory.
func tokenCommand(out, _ io.Writer) *cobra.Command {
	var (
		gw      gateway.Config
		dataDir string
		ttl     time.Duration
	)
	fs := flagenv.New(flag.NewFlagSet("token", flag.ContinueOnError))
	gw.Bind(fs) // for --jwt-secret and --jwt-public-key, read as the gateway reads them
	bindDataDir(fs, &dataDir)
	cmd := &cobra.Command{
		Use:   "token USER",
		Short: "print a token for USER, signed with ROOMCAST_JWT_SECRET or serve's development secret",
		Long: `token prints an HS256 token for USER, signed with --jwt-secret
(ROOMCAST_JWT_SECRET) or, when none is set, with the development secret that
"roomcast serve" generated in --data-dir. It prints the token alone, so a shell
can capture it.`,
		Example: `  roomcast token alice
  TOKEN=$(roomcast token alice --ttl 1h)`,
		Args: usageArgs("USER", cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Parse(nil) parses nothing: it reports the first bad ROOMCAST_* value.
			if err := fs.Parse(nil); err != nil {
				return usageError{err}
			}
			if err := proto.ValidateID(args[0]); err != nil {
				return usageError{err}
			}
			if ttl <= 0 {
				return usagef("--ttl %s: want a positive duration", ttl)
			}
			secret := gw.JWTSecret
			if secret == "" {
				if gw.JWTPublicKeyFile != "" {
					return errors.New("ROOMCAST_JWT_PUBLIC_KEY is set: tokens are signed by your identity provider's private key, which roomcast does not have")
				}
				var err error
				if secret, err = readDevSecret(dataDir); errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("no secret to sign with: set ROOMCAST_JWT_SECRET, or start \"roomcast serve\" without one first (it keeps a development secret in %s)", dataDir)
				} else if err != nil {
					return err
				}
			}
			tok, err := signToken(secret, args[0], ttl)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(out, tok)
			return err
		},
	}
	for _, n := range []string{"jwt-secret", "data-dir"} {
		cmd.Flags().AddGoFlag(fs.Lookup(n))
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	return cmd
}
