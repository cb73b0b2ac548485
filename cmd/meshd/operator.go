package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"minimesh/controlplane"
)

const operatorLong = `Issue or revoke operator credentials on the data dir of a stopped meshd
(a running one holds its data file; use meshctl operator list|revoke
against it).

  issue   writes a new operator credential (svid.pem, svid_key.pem,
          bundle.pem, 0600) into DIR (0700), from the data dir's CA, and
          records it ("operator:offline" in meshctl operator list). No
          existing credential is needed.
  revoke  revokes the operator credential with this certificate serial:
          meshd refuses it from its next start on.`

// newOperatorCmd is `meshd operator issue|revoke`.
func newOperatorCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator issue|revoke",
		Short: "Issue or revoke operator credentials on a stopped meshd's data dir",
		Long:  operatorLong,
		Example: `  meshd operator issue --data-dir /var/lib/minimesh/meshd --out ./op --ttl 720h
  meshd operator revoke 3f2a9c... --data-dir /var/lib/minimesh/meshd`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				cmd.SetOut(cmd.ErrOrStderr())
				_ = cmd.Usage()
				return errors.New("operator: a subcommand is required: issue or revoke")
			}
			return fmt.Errorf("operator: unknown subcommand %q: issue or revoke", args[0])
		},
	}
	// An offline tool: its flag errors are plain text, not log lines.
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w", c.CommandPath(), err)
	})
	cmd.AddCommand(newOperatorIssueCmd(), newOperatorRevokeCmd())
	return cmd
}

// offlineFlags are the flags every offline subcommand shares: they locate
// and open the data dir as meshd does.
func offlineFlags(fs *pflag.FlagSet, cfg *controlplane.Config) {
	fs.StringVar(&cfg.DataDir, "data-dir", "", "meshd's data dir (required; meshd must be stopped)")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "", "SPIFFE trust domain (default: the stored CA's)")
}

func newOperatorIssueCmd() *cobra.Command {
	var (
		cfg controlplane.Config
		out string
		ttl time.Duration
	)
	cmd := &cobra.Command{
		Use:     "issue --out DIR --data-dir DIR",
		Short:   "Write a new operator credential into DIR from the data dir's CA",
		Example: `  meshd operator issue --data-dir /var/lib/minimesh/meshd --out ./op --ttl 720h`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.DataDir == "" {
				return errors.New("operator issue: --data-dir is required")
			}
			if ttl <= 0 {
				return fmt.Errorf("operator issue: --ttl: must be positive, got %v", ttl)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			got, err := controlplane.IssueOperator(cfg, out, ttl)
			if err != nil {
				return fmt.Errorf("operator issue: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote operator credential %s to %s\nidentity: %s\nserial:   %s\nexpires:  %s\nuse it:   meshctl --credentials %s operator list\n",
				got.ID, got.Dir, got.ID, got.Serial, got.NotAfter.UTC().Format(time.RFC3339), got.Dir)
			return nil
		},
	}
	fs := cmd.Flags()
	offlineFlags(fs, &cfg)
	fs.StringVar(&cfg.CAKeyFile, "ca-key-file", "", "the --ca-key-file meshd runs with, when its CA keys are encrypted")
	fs.StringVar(&out, "out", "", "directory to write the credential into (required; created 0700)")
	fs.DurationVar(&ttl, "ttl", 30*24*time.Hour, "lifetime of the credential")
	return cmd
}

func newOperatorRevokeCmd() *cobra.Command {
	var (
		cfg   controlplane.Config
		force bool
	)
	cmd := &cobra.Command{
		Use:     "revoke SERIAL --data-dir DIR",
		Short:   "Revoke the operator credential with this certificate serial (meshctl operator list shows them)",
		Example: `  meshd operator revoke 3f2a9c... --data-dir /var/lib/minimesh/meshd`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return fmt.Errorf("operator revoke: unexpected argument %q", args[1])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("operator revoke: SERIAL is required (meshctl operator list shows the serials)")
			}
			if cfg.DataDir == "" {
				return errors.New("operator revoke: --data-dir is required")
			}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			resp, err := controlplane.RevokeOperator(cfg, args[0], force)
			if err != nil {
				return fmt.Errorf("operator revoke: %w", err)
			}
			o := resp.GetOperator()
			stdout := cmd.OutOrStdout()
			if resp.GetAlreadyRevoked() {
				fmt.Fprintf(stdout, "operator credential %s was already revoked (%s); nothing changed\n", o.GetSerial(), o.GetRevokedAt().AsTime().UTC().Format(time.RFC3339))
				return nil
			}
			fmt.Fprintf(stdout, "operator credential %s revoked (issued by %s); meshd refuses it from its next start\n%d valid operator credentials left\n",
				o.GetSerial(), o.GetIssuedBy(), resp.GetRemaining())
			return nil
		},
	}
	offlineFlags(cmd.Flags(), &cfg)
	cmd.Flags().BoolVar(&force, "force", false, "revoke it even if it is the last valid operator credential")
	return cmd
}
