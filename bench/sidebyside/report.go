package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// sample is one measured wrk run and the CPU its target's processes used.
type sample struct {
	r        wrkResult
	cpuTicks int64
	// foreign is the share of the machine (both cores over the run) that
	// processes other than the target, the app and wrk used: other work on
	// a shared machine, which this run could not control.
	foreign float64
	// appTicks is the app's CPU over the run and idle the share of the
	// machine nobody used: where the rest of a request's cost went.
	appTicks int64
	idle     float64
	// appCS is the app's context switches over the run (every thread)
	// and appConns its open connections at the run's end: how hard a
	// target's way of talking to the app makes the app work.
	appCS    switches
	appConns int
	// appSys is the part of appTicks spent in the kernel (stime).
	appSys int64
}

// row collects every run of one target.
type row struct {
	t     *target
	runs  map[int][]sample // by connections
	rss   []int64          // peak RSS per hop, bytes
	notes []string
	tail  map[int][]tailSample // open-loop runs by percent of nginx's rate
	// rssTainted: a reset of the peak after the open-loop runs failed.
	rssTainted bool
}

// notePeakRSS raises r.rss, per hop, to the hops' current peak.
func (r *row) notePeakRSS() {
	for i, h := range r.t.hops {
		if i >= len(r.rss) {
			r.rss = append(r.rss, 0)
		}
		r.rss[i] = max(r.rss[i], peakRSS(h))
	}
}

type summary struct {
	rps      float64
	p50, p99 time.Duration
	requests int64
	cpuSec   float64
	errors   int64
}

// summarize takes the median of the rounds' requests/s and percentiles
// (robust to one noisy round on shared cores) and the total CPU over the
// total requests.
func (r *row) summarize(conns int) (summary, bool) {
	runs := r.runs[conns]
	if len(runs) == 0 {
		return summary{}, false
	}
	var s summary
	var rps []float64
	var p50, p99 []time.Duration
	var ticks int64
	for _, x := range runs {
		rps = append(rps, x.r.RPS)
		p50 = append(p50, x.r.P50)
		p99 = append(p99, x.r.P99)
		s.requests += x.r.Requests
		ticks += x.cpuTicks
		s.errors += x.r.Errors + x.r.Non2xx
	}
	s.rps = median(rps)
	s.p50, s.p99 = median(p50), median(p99)
	s.cpuSec = float64(ticks) / clockTicks
	return s, true
}

// cpuSplitTable shows where the machine's CPU went per request at conns
// connections: the target, the app, wrk and what nobody used. On a machine
// whose cores are all in use, requests/s is about cores × 10⁶ × (1 − idle)
// over the sum, so a proxy's requests/s against nginx's follows from its
// CPU per request and what its answers cost the app and wrk.
func cpuSplitTable(rows []*row, conns int) string {
	var b strings.Builder
	b.WriteString("| target | hops | target µs | app µs | wrk µs | sum µs | idle | app in kernel | app context switches / req (voluntary + not) | app connections |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		var tgt, app, gen, idle, sys, vol, invol, open []float64
		for _, x := range r.runs[conns] {
			tgt = append(tgt, perReqUS(x.cpuTicks, x.r.Requests))
			app = append(app, perReqUS(x.appTicks, x.r.Requests))
			gen = append(gen, perReqUS(x.r.CPUTicks, x.r.Requests))
			idle = append(idle, 100*x.idle)
			sys = append(sys, pct(x.appSys, x.appTicks))
			vol = append(vol, perReq(x.appCS.vol, x.r.Requests))
			invol = append(invol, perReq(x.appCS.invol, x.r.Requests))
			open = append(open, float64(x.appConns))
		}
		if len(tgt) == 0 {
			continue
		}
		t, a, g := median(tgt), median(app), median(gen)
		toApp := "—" // wrk's, not a proxy's
		if len(r.t.hops) > 0 {
			toApp = fmt.Sprintf("%.0f", median(open))
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f | %.1f | %.1f | %.1f | %.0f %% | %.0f %% | %.2f + %.2f | %s |\n", r.t.name, r.t.shape, t, a, g, t+a+g, median(idle), median(sys), median(vol), median(invol), toApp)
	}
	return b.String()
}

func median[T float64 | time.Duration](v []T) T {
	s := append([]T(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// table renders the rows as Markdown. ref names, per shape, the nginx row
// the "× nginx" column divides by.
func table(rows []*row, hi, lo int) string {
	var direct, nginx1, nginx2 *row
	for _, r := range rows {
		switch {
		case r.t.shape == "direct":
			direct = r
		case r.t.name == "nginx":
			nginx1 = r
		case r.t.name == "nginx → nginx":
			nginx2 = r
		}
	}
	ratio := func(r, ref *row) string {
		if ref == nil || r == ref && r.t.shape == "direct" {
			return "—"
		}
		a, ok1 := r.summarize(hi)
		b, ok2 := ref.summarize(hi)
		if !ok1 || !ok2 || b.rps == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f×", a.rps/b.rps)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| target | hops | req/s @%d | × direct | × nginx | p50 / p99 @%d | req/s @%d | p50 / p99 @%d | added p50 @%d | peak RSS | CPU s / 100k req |\n", hi, hi, lo, lo, lo)
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var d1 summary
	if direct != nil {
		d1, _ = direct.summarize(lo)
	}
	for _, r := range rows {
		h, _ := r.summarize(hi)
		l, _ := r.summarize(lo)
		name := r.t.name
		if h.errors+l.errors > 0 {
			name += fmt.Sprintf(" (%d errors)", h.errors+l.errors)
		}
		ref := nginx1
		if r.t.shape == "two hops" {
			ref = nginx2
		}
		xd, xn := ratio(r, direct), ratio(r, ref)
		added, rss, cpu := "—", "—", "—"
		if r.t.shape != "direct" {
			added = fmt.Sprintf("+%.3f ms", ms(l.p50-d1.p50))
			var parts []string
			for _, v := range r.rss {
				parts = append(parts, fmt.Sprintf("%.0f", float64(v)/(1<<20)))
			}
			rss = strings.Join(parts, " + ") + " MB"
			if h.requests > 0 {
				cpu = fmt.Sprintf("%.2f", h.cpuSec/float64(h.requests)*1e5)
			}
		} else {
			xd = "1.00×"
		}
		if r == ref {
			xn = "1.00×"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.2f / %.2f ms | %s | %.3f / %.3f ms | %s | %s | %s |\n",
			name, r.t.shape, thousands(h.rps), xd, xn, ms(h.p50), ms(h.p99),
			thousands(l.rps), ms(l.p50), ms(l.p99), added, rss, cpu)
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func profileMarkdown(p profileResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s** (%s", p.target, p.samples)
	if p.syscallsPerReq > 0 {
		fmt.Fprintf(&b, "; %.1f system calls and %.2f context switches per request", p.syscallsPerReq, p.switchesPerReq)
		if len(p.byName) > 0 {
			var names []string
			for _, n := range p.byName {
				names = append(names, fmt.Sprintf("%s %.2f", n.name, n.n))
			}
			fmt.Fprintf(&b, " (%s)", strings.Join(names, ", "))
		}
	}
	b.WriteString("): ")
	var cats []string
	for _, c := range p.categories {
		if c.pct < 0.5 {
			continue
		}
		cats = append(cats, fmt.Sprintf("%s %.0f %%", c.name, c.pct))
	}
	b.WriteString(strings.Join(cats, ", "))
	b.WriteString(".\n\n| self % | where | symbol |\n| ---: | --- | --- |\n")
	for _, s := range p.top {
		fmt.Fprintf(&b, "| %.1f | %s | `%s` |\n", s.pct, s.dso, s.sym)
	}
	return b.String()
}

const (
	beginMarker = "<!-- sidebyside:begin (generated by bench/sidebyside; notes go below the end marker) -->"
	endMarker   = "<!-- sidebyside:end -->"
	heading     = "## Side by side: one request through one or two proxies"
)

// replaceSection puts body between the markers in doc, or appends a new
// section with the markers when doc has none.
func replaceSection(doc, body string) string {
	block := beginMarker + "\n" + strings.TrimRight(body, "\n") + "\n" + endMarker
	i := strings.Index(doc, "<!-- sidebyside:begin")
	j := strings.Index(doc, endMarker)
	if i >= 0 && j > i {
		return doc[:i] + block + doc[j+len(endMarker):]
	}
	return strings.TrimRight(doc, "\n") + "\n\n" + heading + "\n\n" + block + "\n"
}

func writeResults(path, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.WriteFile(path, []byte(replaceSection(string(old), body)), 0o644)
}
