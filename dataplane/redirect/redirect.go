package redirect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
)

// Redirect installs and removes a Config's rules in the nat table of the
// network namespace it runs in.
type Redirect struct {
	cfg Config
}

// New checks cfg and returns a Redirect; nothing runs until Install.
func New(cfg Config) (*Redirect, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Redirect{cfg: cfg}, nil
}

// Script is the iptables-restore input Install would apply to a nat table
// that holds none of our rules (for --dry-run and review).
func (r *Redirect) Script() string { return r.cfg.script(nil) }

// Install makes the nat table hold exactly the config's rules. It is
// idempotent: our chains are flushed and refilled and each jump to them is
// present once, so running it again (an init container that restarts, or
// a changed config) never duplicates a rule. The change is one
// iptables-restore transaction.
func (r *Redirect) Install(ctx context.Context) error {
	save, err := r.run(ctx, r.cfg.Iptables+"-save", nil, "-t", "nat")
	if err != nil {
		return err
	}
	script := r.cfg.script(countJumps(save))
	if _, err := r.run(ctx, r.cfg.Iptables+"-restore", []byte(script), "--noflush"); err != nil {
		return err
	}
	r.cfg.Logger.Info("redirect: installed",
		slog.Int("proxy_uid", r.cfg.ProxyUID),
		slog.Int("inbound_port", r.cfg.InboundPort),
		slog.Any("capture_ports", r.cfg.CapturePorts),
		slog.Bool("capture_all_inbound", r.cfg.CaptureAllInbound),
		slog.Int("outbound_port", r.cfg.OutboundPort))
	return nil
}

// Clean removes every rule Install added (any config's): the jumps from
// PREROUTING and OUTPUT, then our chains. Missing rules are not an error.
func (r *Redirect) Clean(ctx context.Context) error {
	save, err := r.run(ctx, r.cfg.Iptables+"-save", nil, "-t", "nat")
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("*nat\n")
	for j, n := range countJumps(save) {
		for range n {
			fmt.Fprintf(&b, "-D %s %s\n", j.chain, j.rule)
		}
	}
	for _, ch := range []string{ChainInbound, ChainInRedirect, ChainOutput, ChainRedirect} {
		if strings.Contains(save, ":"+ch+" ") {
			fmt.Fprintf(&b, "-F %s\n-X %s\n", ch, ch)
		}
	}
	b.WriteString("COMMIT\n")
	if _, err := r.run(ctx, r.cfg.Iptables+"-restore", []byte(b.String()), "--noflush"); err != nil {
		return err
	}
	r.cfg.Logger.Info("redirect: removed")
	return nil
}

// run runs one iptables program, bounded by the config's timeout, and
// returns its standard output.
func (r *Redirect) run(ctx context.Context, name string, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if errors.Is(err, exec.ErrNotFound) {
			msg = "not found in PATH: the image needs iptables"
		}
		if stdin != nil && msg != "" {
			msg += "; input was:\n" + string(stdin)
		}
		return "", fmt.Errorf("%w: %s %s: %w: %s", ErrIptables, name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}
