package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"minimesh/controlplane"
)

const operatorUsage = `usage:
  meshd operator issue --out DIR --data-dir DIR [--ttl 720h] [--ca-key-file FILE]
  meshd operator revoke SERIAL --data-dir DIR [--force]

Both work on the data dir of a stopped meshd (a running one holds its data
file; use meshctl operator list|revoke against it).

  issue   writes a new operator credential (svid.pem, svid_key.pem,
          bundle.pem, 0600) into DIR (0700), from the data dir's CA, and
          records it ("operator:offline" in meshctl operator list). No
          existing credential is needed.
  revoke  revokes the operator credential with this certificate serial:
          meshd refuses it from its next start on.
`

// runOperator is `meshd operator ...`.
func runOperator(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, operatorUsage)
		return errors.New("operator: a subcommand is required: issue or revoke")
	}
	switch args[0] {
	case "issue":
		return operatorIssue(args[1:], stdout, stderr)
	case "revoke":
		return operatorRevoke(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, operatorUsage)
		return nil
	default:
		fmt.Fprint(stderr, operatorUsage)
		return fmt.Errorf("operator: unknown subcommand %q: issue or revoke", args[0])
	}
}

// offlineFlags are the flags every offline subcommand shares: they locate
// and open the data dir as meshd does.
func offlineFlags(fs *flag.FlagSet, cfg *controlplane.Config) {
	fs.StringVar(&cfg.DataDir, "data-dir", "", "meshd's data dir (required; meshd must be stopped)")
	fs.StringVar(&cfg.TrustDomain, "trust-domain", "", "SPIFFE trust domain (default: the stored CA's)")
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("meshd operator "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, operatorUsage, "\nflags:\n"); fs.PrintDefaults() }
	return fs
}

func operatorIssue(args []string, stdout, stderr io.Writer) error {
	var cfg controlplane.Config
	fs := newFlagSet("issue", stderr)
	offlineFlags(fs, &cfg)
	fs.StringVar(&cfg.CAKeyFile, "ca-key-file", "", "the --ca-key-file meshd runs with, when its CA keys are encrypted")
	out := fs.String("out", "", "directory to write the credential into (required; created 0700)")
	ttl := fs.Duration("ttl", 30*24*time.Hour, "lifetime of the credential")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("operator issue: unexpected argument %q", fs.Arg(0))
	}
	if cfg.DataDir == "" {
		return errors.New("operator issue: --data-dir is required")
	}
	if *ttl <= 0 {
		return fmt.Errorf("operator issue: --ttl: must be positive, got %v", *ttl)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	got, err := controlplane.IssueOperator(cfg, *out, *ttl)
	if err != nil {
		return fmt.Errorf("operator issue: %w", err)
	}
	fmt.Fprintf(stdout, "wrote operator credential %s to %s\nidentity: %s\nserial:   %s\nexpires:  %s\nuse it:   meshctl --credentials %s operator list\n",
		got.ID, got.Dir, got.ID, got.Serial, got.NotAfter.UTC().Format(time.RFC3339), got.Dir)
	return nil
}

func operatorRevoke(args []string, stdout, stderr io.Writer) error {
	var cfg controlplane.Config
	fs := newFlagSet("revoke", stderr)
	offlineFlags(fs, &cfg)
	force := fs.Bool("force", false, "revoke it even if it is the last valid operator credential")
	// SERIAL may come before or after the flags.
	var serial string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		serial, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if serial == "" && fs.NArg() > 0 {
		serial = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("operator revoke: unexpected argument %q", fs.Arg(0))
	}
	if serial == "" {
		return errors.New("operator revoke: SERIAL is required (meshctl operator list shows the serials)")
	}
	if cfg.DataDir == "" {
		return errors.New("operator revoke: --data-dir is required")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	resp, err := controlplane.RevokeOperator(cfg, serial, *force)
	if err != nil {
		return fmt.Errorf("operator revoke: %w", err)
	}
	o := resp.GetOperator()
	if resp.GetAlreadyRevoked() {
		fmt.Fprintf(stdout, "operator credential %s was already revoked (%s); nothing changed\n", o.GetSerial(), o.GetRevokedAt().AsTime().UTC().Format(time.RFC3339))
		return nil
	}
	fmt.Fprintf(stdout, "operator credential %s revoked (issued by %s); meshd refuses it from its next start\n%d valid operator credentials left\n",
		o.GetSerial(), o.GetIssuedBy(), resp.GetRemaining())
	return nil
}
