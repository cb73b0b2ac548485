// Command mesh-proxy is minimesh's sidecar: it gets and renews the pod's
// identity from meshd, terminates mTLS (and plain TLS for outside clients)
// in front of the app, and carries the app's outbound calls over mTLS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"minimesh/dataplane/admin"
	"minimesh/dataplane/sidecar"
	"minimesh/internal/version"
)

func main() {
	run := run
	if len(os.Args) > 1 && os.Args[1] == "redirect" {
		run = runRedirect // the init container's traffic capture
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-proxy:", err)
		os.Exit(1)
	}
}

func run() error {
	o, err := parseFlags(os.Args[1:], os.Stderr, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		os.Exit(2) // the flag package printed the error and the usage
	}
	if o.showVersion {
		fmt.Println(version.Version)
		return nil
	}
	cfg, err := config(o, os.Stderr)
	if err != nil {
		return err
	}
	sc, err := sidecar.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sc.Run(ctx)
}

// config completes the sidecar's config from the options: the token file,
// the app probes, the logger (JSON to logs).
func config(o *options, logs io.Writer) (sidecar.Config, error) {
	cfg := o.cfg
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return cfg, err
		}
		cfg.Token = strings.TrimSpace(string(b))
	}
	if cfg.Service == "" || cfg.StateDir == "" {
		return cfg, fmt.Errorf("--service and --state-dir are required")
	}
	probes, err := admin.ParseAppProbes(o.appProbes)
	if err != nil {
		return cfg, err
	}
	cfg.AppProbes = probes
	cfg.Version = version.Version
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: o.logLevel})).With("service", cfg.Service)
	if o.tokenOnCommandLine {
		cfg.Logger.Warn("the join token was given with --token: anyone who can list processes in the pod sees it (/topz and /procz redact it); use --token-file or MESH_PROXY_TOKEN")
	}
	return cfg, nil
}
