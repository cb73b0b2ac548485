// Package quantile is the benches' percentile rule: nearest rank over
// every sample, as bench/sidebyside reports vegeta's and bench/openloop's.
package quantile

import (
	"math"
	"time"
)

// NearestRank is the nearest-rank q-quantile of sorted: the smallest value
// with at least q of the values at or below it.
func NearestRank(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The rank ceil(q·n) in integers: in floating point 0.07·100 is
	// 7.000000000000001, whose ceiling would pick the 8th value.
	const parts = 1_000_000
	k, n := int64(math.Round(q*parts)), int64(len(sorted))
	i := (k*n+parts-1)/parts - 1
	return sorted[min(max(i, 0), n-1)]
}
