// Command mesh-proxy is minimesh's sidecar: it gets and renews the pod's
// identity from meshd, terminates mTLS (and plain TLS for outside clients)
// in front of the app, and carries the app's outbound calls over mTLS.
package main

import (
	"context"
	"fmt"
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
	o := parseFlags(os.Args[1:])
	if o.showVersion {
		fmt.Println(version.Version)
		return nil
	}
	cfg := o.cfg
	if o.tokenFile != "" {
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return err
		}
		cfg.Token = strings.TrimSpace(string(b))
	}
	if cfg.Service == "" || cfg.StateDir == "" {
		return fmt.Errorf("--service and --state-dir are required")
	}
	probes, err := admin.ParseAppProbes(o.appProbes)
	if err != nil {
		return err
	}
	cfg.AppProbes = probes
	cfg.Version = version.Version
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: o.logLevel})).With("service", cfg.Service)

	sc, err := sidecar.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return sc.Run(ctx)
}
