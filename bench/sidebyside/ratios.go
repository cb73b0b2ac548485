package main

import (
	"fmt"
	"slices"
	"strings"
)

// Per-round ratios: each round's value of a row over its reference's in
// the same round, then the median and range of those ratios. Both rows of
// a round ran within minutes of each other, so drift of the shared machine
// between rounds cancels out of each ratio; the median of the table's
// medians does not have that property.

// rpsByRound is r's requests/s at conns, one value per round.
func rpsByRound(r *row, conns int) []float64 {
	var out []float64
	for _, x := range r.runs[conns] {
		out = append(out, x.r.RPS)
	}
	return out
}

// cpuPerRequestByRound is r's CPU ticks per request at conns, one value
// per round (0 for a round without requests).
func cpuPerRequestByRound(r *row, conns int) []float64 {
	var out []float64
	for _, x := range r.runs[conns] {
		v := 0.0
		if x.r.Requests > 0 {
			v = float64(x.cpuTicks) / float64(x.r.Requests)
		}
		out = append(out, v)
	}
	return out
}

// perRound is a[i]/b[i] for every round both have, skipping a round where
// either value is not positive (no ratio to take).
func perRound(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if a[i] > 0 && b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

// ratioText is "median× (min–max)", just "median×" for one value, "—"
// for none.
func ratioText(v []float64) string {
	switch len(v) {
	case 0:
		return "—"
	case 1:
		return fmt.Sprintf("%.2f×", v[0])
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", median(v), slices.Min(v), slices.Max(v))
}

// ratioPair is one line of the per-round table: a over b.
type ratioPair struct{ a, b *row }

// ratioPairs are the lines the per-round table shows: every mesh-proxy and
// Caddy row over the nginx row of its hops, then mesh-proxy over Caddy and
// over the old binary, one and two hops.
func ratioPairs(rows []*row) []ratioPair {
	byName := map[string]*row{}
	for _, r := range rows {
		byName[r.t.name] = r
	}
	var out []ratioPair
	for _, r := range rows {
		if !strings.HasPrefix(r.t.name, "mesh-proxy") && !strings.HasPrefix(r.t.name, "caddy") {
			continue
		}
		ref := byName["nginx"]
		if r.t.shape == "two hops" {
			ref = byName["nginx → nginx"]
		}
		if ref != nil {
			out = append(out, ratioPair{r, ref})
		}
	}
	for _, p := range [][2]string{
		{plainGoroutines, plainNginx},
		{plainLoop, plainNginx},
		{plainGoroutines, plainLoop},
		{tlsGoroutines, "nginx"},
		{tlsProcs, "nginx"},
		{tlsProcs, tlsGoroutines},
		{"mesh-proxy", tlsProcs},
		{"mesh-proxy", tlsGoroutines},
		{"mesh-proxy", "caddy"},
		{"mesh-proxy → mesh-proxy", "caddy → caddy"},
		{"mesh-proxy", "mesh-proxy (old binary)"},
		{"mesh-proxy → mesh-proxy", "mesh-proxy → mesh-proxy (old binary)"},
	} {
		if a, b := byName[p[0]], byName[p[1]]; a != nil && b != nil {
			out = append(out, ratioPair{a, b})
		}
	}
	return out
}

// ratioTable renders ratioPairs: requests/s at hi and lo connections and
// CPU per request at hi.
func ratioTable(rows []*row, hi, lo int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| ratio | req/s @%d | req/s @%d | CPU per request @%d |\n| --- | ---: | ---: | ---: |\n", hi, lo, hi)
	for _, p := range ratioPairs(rows) {
		fmt.Fprintf(&b, "| %s / %s | %s | %s | %s |\n", p.a.t.name, p.b.t.name,
			ratioText(perRound(rpsByRound(p.a, hi), rpsByRound(p.b, hi))),
			ratioText(perRound(rpsByRound(p.a, lo), rpsByRound(p.b, lo))),
			ratioText(perRound(cpuPerRequestByRound(p.a, hi), cpuPerRequestByRound(p.b, hi))))
	}
	return b.String()
}

// Issue 22's bars: at hi connections, the per-round median of mesh-proxy's
// requests/s over nginx's must be at least 0.85 for one hop, and the
// pair's over the nginx chain's at least 0.80 for two hops, in each of
// three full runs of one build.
var issue22Bars = []struct {
	a, b, what string
	bar        float64
}{
	{"mesh-proxy", "nginx", "one hop", 0.85},
	{"mesh-proxy → mesh-proxy", "nginx → nginx", "two hops", 0.80},
}

// barsLine says, unrounded, where this run stands against issue 22's
// bars (the table rounds 0.846 to 0.85, which would read as met), or ""
// when the run lacks the rows.
func barsLine(rows []*row, hi int) string {
	byName := map[string]*row{}
	for _, r := range rows {
		byName[r.t.name] = r
	}
	var parts []string
	for _, b := range issue22Bars {
		ra, rb := byName[b.a], byName[b.b]
		if ra == nil || rb == nil {
			return ""
		}
		v := perRound(rpsByRound(ra, hi), rpsByRound(rb, hi))
		if len(v) == 0 {
			return ""
		}
		m, verdict := median(v), "met"
		if m < b.bar {
			verdict = "missed"
		}
		parts = append(parts, fmt.Sprintf("%s %.3f× %s (bar %.2f×: %s)", b.what, m, b.b, b.bar, verdict))
	}
	return fmt.Sprintf("issue 22 bars at %d connections, per-round medians unrounded: %s", hi, strings.Join(parts, "; "))
}
