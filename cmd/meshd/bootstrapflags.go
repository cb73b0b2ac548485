package main

import (
	"fmt"
	"math"

	"github.com/spf13/pflag"

	"minimesh/controlplane"
)

// bootstrapLimitFlags registers --bootstrap-rate and --bootstrap-burst on
// fs, writing into cfg (defaults: 1/s, burst 10, as identity.HandlerConfig's).
// The returned check refuses values that would silently mean something else
// (0 is "the default" to the handler, a negative rate or burst refuses all,
// and an infinite rate is no limit at all).
func bootstrapLimitFlags(fs *pflag.FlagSet, cfg *controlplane.Config) (check func() error) {
	fs.Float64Var((*float64)(&cfg.BootstrapRate), "bootstrap-rate", 1, "Bootstrap attempts allowed per second, per source address; raise for many pods behind one NAT address")
	fs.IntVar(&cfg.BootstrapBurst, "bootstrap-burst", 10, "Bootstrap attempts allowed at once, per source address; raise for many pods behind one NAT address")
	return func() error {
		if r := float64(cfg.BootstrapRate); !(r > 0) || math.IsInf(r, 0) {
			return fmt.Errorf("--bootstrap-rate: must be a positive number of attempts per second, got %v", r)
		}
		if cfg.BootstrapBurst < 1 {
			return fmt.Errorf("--bootstrap-burst: must be at least 1, got %d", cfg.BootstrapBurst)
		}
		return nil
	}
}
