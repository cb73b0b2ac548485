package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"minimesh/dataplane/redirect"
)

// runRedirect is `mesh-proxy redirect [flags]`: the pod's init container
// installs the iptables rules that capture the app's traffic for the
// proxy (see dataplane/redirect).
func runRedirect() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return redirect.Main(ctx, os.Args[2:], os.Stdout, os.Stderr)
}
