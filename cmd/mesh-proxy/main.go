// Command mesh-proxy is minimesh's sidecar: it gets and renews the pod's
// identity from meshd, terminates mTLS (and plain TLS for outside clients)
// in front of the app, and carries the app's outbound calls over mTLS.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"syscall"

	"minimesh/dataplane/admin"
	"minimesh/dataplane/sidecar"
	"minimesh/internal/daemon"
	"minimesh/internal/fsguard"
	"minimesh/internal/version"
)

func main() {
	root := newRoot(os.Stdout, os.Stderr, os.Getenv, func(ctx context.Context, o *options) error { return run(ctx, o, os.Stderr) })
	if err := root.Execute(); err != nil {
		if !errors.Is(err, daemon.ErrLogged) {
			fmt.Fprintln(os.Stderr, "mesh-proxy:", err)
		}
		os.Exit(1)
	}
}

// run runs the sidecar until SIGTERM/SIGINT or ctx ends; every failure is
// one log line.
func run(ctx context.Context, o *options, logs io.Writer) error {
	cfg, err := config(o, logs)
	if err != nil {
		return daemon.Failed(o.log.Logger(logs), "mesh-proxy", err)
	}
	cfg.Logger.Info("mesh-proxy starting", "version", version.Version, "control_plane", cfg.ControlPlane, "admin", cfg.Admin)
	sc, err := sidecar.New(cfg)
	if err != nil {
		return daemon.Failed(cfg.Logger, "mesh-proxy", err)
	}
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return daemon.Failed(cfg.Logger, "mesh-proxy", fmt.Errorf("--cpu-profile: %w", err))
		}
		defer func() {
			if err := stop(); err != nil {
				cfg.Logger.Error("--cpu-profile not written", "error", err)
			}
		}()
	}
	return daemon.Run(ctx, cfg.Logger, "mesh-proxy", sc.Run)
}

// startCPUProfile profiles the process into path (made 0600, never through
// a symlink) until stop, which writes the profile out.
func startCPUProfile(path string) (stop func() error, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// config completes the sidecar's config from the options: the token file,
// the app probes, the logger (to logs, in --log-format).
func config(o *options, logs io.Writer) (sidecar.Config, error) {
	cfg := o.cfg
	if o.tokenFile != "" {
		// A mounted Secret (through links): a token others could write
		// or plant is not used. Every user may read it: a Secret volume's
		// default mode is 0644 and it is mounted in the proxy's container
		// only.
		b, err := fsguard.ReadMounted(o.tokenFile, false, 4<<10)
		if err != nil {
			return cfg, fmt.Errorf("--token-file: %w", err)
		}
		cfg.Token = strings.TrimSpace(string(b))
	}
	if cfg.Service == "" || cfg.StateDir == "" {
		return cfg, fmt.Errorf("--service and --state-dir are required")
	}
	probes, err := admin.ParseAppProbes(o.appProbes)
	if err != nil {
		return cfg, fmt.Errorf("--app-probes: %w", err)
	}
	cfg.AppProbes = probes
	cfg.Version = version.Version
	// Every line names the proxy's service; nothing below logs "service"
	// again (an upstream's is "upstream").
	cfg.Logger = o.log.Logger(logs).With("service", cfg.Service)
	if o.tokenOnCommandLine {
		cfg.Logger.Warn("the join token was given with --token: anyone who can list processes in the pod sees it (/topz and /procz redact it); use --token-file or MESH_PROXY_TOKEN")
	}
	return cfg, nil
}
