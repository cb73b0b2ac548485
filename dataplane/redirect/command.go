package redirect

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Main is `mesh-proxy redirect`: it parses args (without the subcommand's
// name), then installs the rules, removes them (--clean) or prints them
// (--dry-run). It runs in the pod's init container, which needs NET_ADMIN
// and NET_RAW and an iptables binary. A -h gives the usage and returns nil.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, mode, err := ParseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(stderr, nil))
	if mode == ModeClean {
		// Removing needs no capture config: every rule of ours goes.
		return (&Redirect{cfg: cfg.withDefaults()}).Clean(ctx)
	}
	r, err := New(cfg)
	if err != nil {
		return err
	}
	if mode == ModeDryRun {
		_, err = io.WriteString(stdout, r.Script())
		return err
	}
	return r.Install(ctx)
}

// Mode is what Main does with the rules.
type Mode int

// The modes of Main.
const (
	ModeInstall Mode = iota
	ModeClean
	ModeDryRun
)

// ParseFlags parses `mesh-proxy redirect` flags into a Config (whose
// Validate is left to New) and the mode. Usage goes to usage.
func ParseFlags(args []string, usage io.Writer) (Config, Mode, error) {
	var (
		cfg                                        Config
		capture, exclIn, exclOutPorts, exclOutNets string
		dryRun, clean                              bool
	)
	fs := flag.NewFlagSet("mesh-proxy redirect", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.Usage = func() {
		fmt.Fprintln(usage, "Usage: mesh-proxy redirect [flags]\n\nInstalls the iptables nat rules that send the pod's inbound TCP for the app's\nports to the proxy's inbound port and the app's outbound TCP to the proxy's\noutbound port; the proxy's own user is never redirected.")
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.ProxyUID, "proxy-uid", DefaultProxyUID, "user mesh-proxy runs as; its traffic is never redirected")
	fs.IntVar(&cfg.ProxyGID, "proxy-gid", 0, "group whose traffic is never redirected (0: none)")
	fs.IntVar(&cfg.InboundPort, "inbound-port", DefaultInboundPort, "proxy port that receives captured inbound connections")
	fs.StringVar(&capture, "capture-ports", "", `inbound ports to capture, comma-separated, or "*" for every port but the excluded`)
	fs.StringVar(&exclIn, "exclude-inbound-ports", "", "inbound ports never captured (the proxy's admin port), comma-separated")
	fs.IntVar(&cfg.OutboundPort, "outbound-port", 0, "proxy port that receives the app's captured outbound connections (0: do not capture outbound)")
	fs.StringVar(&exclOutPorts, "exclude-outbound-ports", "", "destination ports the app reaches directly, comma-separated")
	fs.StringVar(&exclOutNets, "exclude-outbound-cidrs", "", "destination IPv4 CIDRs the app reaches directly, comma-separated")
	fs.StringVar(&cfg.Iptables, "iptables", "iptables", "iptables command: iptables, iptables-legacy or iptables-nft")
	fs.BoolVar(&dryRun, "dry-run", false, "print the iptables-restore input and change nothing")
	fs.BoolVar(&clean, "clean", false, "remove the rules instead of installing them")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, 0, err
		}
		return Config{}, 0, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if fs.NArg() > 0 {
		return Config{}, 0, fmt.Errorf("%w: unexpected arguments %q", ErrInvalidConfig, fs.Args())
	}
	var err error
	if strings.TrimSpace(capture) == "*" {
		cfg.CaptureAllInbound = true
	} else if cfg.CapturePorts, err = ParsePorts(capture); err != nil {
		return Config{}, 0, fmt.Errorf("--capture-ports: %w", err)
	}
	if cfg.ExcludeInboundPorts, err = ParsePorts(exclIn); err != nil {
		return Config{}, 0, fmt.Errorf("--exclude-inbound-ports: %w", err)
	}
	if cfg.ExcludeOutboundPorts, err = ParsePorts(exclOutPorts); err != nil {
		return Config{}, 0, fmt.Errorf("--exclude-outbound-ports: %w", err)
	}
	if cfg.ExcludeOutboundCIDRs, err = ParseCIDRs(exclOutNets); err != nil {
		return Config{}, 0, fmt.Errorf("--exclude-outbound-cidrs: %w", err)
	}
	mode := ModeInstall
	switch {
	case dryRun && clean:
		return Config{}, 0, fmt.Errorf("%w: --dry-run and --clean together", ErrInvalidConfig)
	case dryRun:
		mode = ModeDryRun
	case clean:
		mode = ModeClean
	}
	return cfg, mode, nil
}
