package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"golang.org/x/time/rate"

	"minimesh/controlplane"
)

// TestBootstrapLimitFlags: --bootstrap-rate and --bootstrap-burst reach
// controlplane.Config (which passes them to the identity handler's
// per-source limiter), default to 1/s and 10, say in their help what they
// are for, and values the handler would read as something else are refused
// naming the flag.
func TestBootstrapLimitFlags(t *testing.T) {
	parse := func(args ...string) (controlplane.Config, string, error) {
		var cfg controlplane.Config
		fs := pflag.NewFlagSet("meshd", pflag.ContinueOnError)
		var usage bytes.Buffer
		fs.SetOutput(&usage)
		check := bootstrapLimitFlags(fs, &cfg)
		if err := fs.Parse(args); err != nil {
			return cfg, usage.String(), err
		}
		fs.PrintDefaults()
		return cfg, usage.String(), check()
	}

	cfg, help, err := parse()
	if err != nil || cfg.BootstrapRate != 1 || cfg.BootstrapBurst != 10 {
		t.Fatalf("defaults: rate %v burst %d err %v, want 1/s, 10, nil", cfg.BootstrapRate, cfg.BootstrapBurst, err)
	}
	for _, name := range []string{"--bootstrap-rate", "--bootstrap-burst"} {
		i := strings.Index(help, name)
		if i < 0 || !strings.Contains(help[i:], "per source address; raise for many pods behind one NAT address") {
			t.Errorf("help of %s does not say what it is for:\n%s", name, help)
		}
	}

	cfg, _, err = parse("--bootstrap-rate", "50", "--bootstrap-burst", "2000")
	if err != nil || cfg.BootstrapRate != rate.Limit(50) || cfg.BootstrapBurst != 2000 {
		t.Fatalf("--bootstrap-rate 50 --bootstrap-burst 2000: rate %v burst %d err %v", cfg.BootstrapRate, cfg.BootstrapBurst, err)
	}
	cfg, _, err = parse("--bootstrap-rate", "0.5")
	if err != nil || cfg.BootstrapRate != 0.5 || cfg.BootstrapBurst != 10 {
		t.Fatalf("--bootstrap-rate 0.5: rate %v burst %d err %v", cfg.BootstrapRate, cfg.BootstrapBurst, err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bootstrap-rate", "0"}, "--bootstrap-rate: must be a positive"},
		{[]string{"--bootstrap-rate", "-1"}, "--bootstrap-rate: must be a positive"},
		{[]string{"--bootstrap-rate", "NaN"}, "--bootstrap-rate: must be a positive"},
		{[]string{"--bootstrap-rate", "+Inf"}, "--bootstrap-rate: must be a positive"},
		{[]string{"--bootstrap-rate", "fast"}, "-bootstrap-rate"},
		{[]string{"--bootstrap-burst", "0"}, "--bootstrap-burst: must be at least 1"},
		{[]string{"--bootstrap-burst", "-5"}, "--bootstrap-burst: must be at least 1"},
		{[]string{"--bootstrap-burst", "1.5"}, "-bootstrap-burst"},
	} {
		if _, _, err := parse(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %q", c.args, err, c.want)
		}
	}
}
