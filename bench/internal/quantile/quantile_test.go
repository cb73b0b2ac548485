package quantile

import (
	"testing"
	"time"
)

func TestQuantileNearestRank(t *testing.T) {
	var hundred, thousand []time.Duration
	for i := 1; i <= 1000; i++ {
		thousand = append(thousand, time.Duration(i))
		if i <= 100 {
			hundred = append(hundred, time.Duration(i))
		}
	}
	for _, tc := range []struct {
		v    []time.Duration
		q    float64
		want time.Duration
	}{
		{hundred, 0.50, 50}, {hundred, 0.07, 7}, {hundred, 0.99, 99}, {hundred, 0.999, 100}, {hundred, 1, 100}, {hundred, 0, 1},
		{thousand, 0.50, 500}, {thousand, 0.99, 990}, {thousand, 0.999, 999},
		{[]time.Duration{7}, 0.999, 7}, {nil, 0.5, 0},
	} {
		if got := NearestRank(tc.v, tc.q); got != tc.want {
			t.Errorf("NearestRank(n=%d, %v) = %d, want %d", len(tc.v), tc.q, got, tc.want)
		}
	}
}
