package main

import (
	"bytes"
	"io"
	"log/slog"
	"os/signal"
	"regexp"
	"syscall"

	"github.com/spf13/cobra"

	"minimesh/dataplane/redirect"
	"minimesh/internal/daemon"
)

// newRedirectCmd is `mesh-proxy redirect [flags]`: the pod's init container
// installs the iptables rules that capture the app's traffic for the
// proxy (see dataplane/redirect, which parses its flags).
func newRedirectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "redirect [flags]",
		Short: "Install the iptables rules that capture the pod's traffic for the proxy (the init container)",
		Long: `Installs the iptables nat rules that send the pod's inbound TCP for the
app's ports to the proxy's inbound port and the app's outbound TCP to the
proxy's outbound port (--transparent); the proxy's own user is never
redirected. mesh-proxy redirect --help lists its flags.`,
		Example: `  mesh-proxy redirect --capture-ports 8080 --exclude-inbound-ports 15020 --outbound-port 15001
  mesh-proxy redirect --dry-run --capture-ports '*'
  mesh-proxy redirect --clean`,
		// dataplane/redirect parses its own flags (--help included).
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			usage := &doubleDash{w: cmd.ErrOrStderr()}
			err := redirect.Main(ctx, args, cmd.OutOrStdout(), usage)
			_ = usage.Flush()
			if err != nil { // one JSON line, as redirect logs
				return daemon.Failed(daemon.NewLogger(cmd.ErrOrStderr(), daemon.FormatJSON, slog.LevelInfo), "mesh-proxy redirect", err)
			}
			return nil
		},
	}
}

// doubleDash writes what dataplane/redirect prints (Go flag's usage, its
// JSON log lines) with each flag of the usage spelled as pflag spells
// them: "  --capture-ports string", so mesh-proxy's help has one style.
type doubleDash struct {
	w    io.Writer
	line []byte
}

var singleDashFlag = regexp.MustCompile(`^  -([a-z])`)

func (d *doubleDash) Write(p []byte) (int, error) {
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			d.line = append(d.line, rest...)
			break
		}
		d.line = append(d.line, rest[:i+1]...)
		rest = rest[i+1:]
		if err := d.Flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Flush writes the pending line.
func (d *doubleDash) Flush() error {
	if len(d.line) == 0 {
		return nil
	}
	_, err := d.w.Write(singleDashFlag.ReplaceAll(d.line, []byte("  --$1")))
	d.line = d.line[:0]
	return err
}
