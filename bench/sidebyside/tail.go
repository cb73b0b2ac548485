package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"
)

// tailPercents are the open-loop rates, in percent of the requests/s the
// nginx row of the same hops reached at -conns in the same round.
var tailPercents = []int{50, 80}

// tailSample is one open-loop run of one target.
type tailSample struct {
	round   int
	r       tailResult
	foreign float64 // as sample.foreign
}

// tailRef is the nginx row whose rate in a round sets a row's open-loop
// rates: the one-hop nginx for direct and one-hop rows, the nginx chain for
// two hops.
func tailRef(rows []*row, r *row) *row {
	want := "nginx"
	if r.t.shape == "two hops" {
		want = "nginx → nginx"
	}
	for _, x := range rows {
		if x.t.name == want {
			return x
		}
	}
	return nil
}

// tailRound loads every target open-loop, after round's wrk runs, at each
// of tailPercents of its nginx row's requests/s in that round, in the wrk
// runs' order (order.go). Each run first waits (within -extra) for a
// quiet second; a disturbed run is not repeated, its other load is
// reported.
func tailRound(ctx context.Context, o options, e *env, rows []*row, app *child, round int, extra *time.Duration) error {
	for _, s := range roundSteps(rows, o.order, round, len(tailPercents)) {
		r, pct := s.r, tailPercents[s.level]
		ref := tailRef(rows, r)
		if ref == nil || len(ref.runs[o.hi]) <= round {
			continue
		}
		top := ref.runs[o.hi][round].r.RPS
		rate := int(top * float64(pct) / 100)
		if rate < 1 {
			continue
		}
		t0 := time.Now()
		if *extra > 0 {
			waitQuiet(ctx, o.maxOther/2, min(5*time.Second, *extra))
		}
		*extra -= time.Since(t0)
		x, err := measureTail(ctx, o, e, r.t, app, rate)
		if err != nil {
			return err
		}
		x.round = round
		if r.tail == nil {
			r.tail = map[int][]tailSample{}
		}
		r.tail[pct] = append(r.tail[pct], x)
		fmt.Printf("round %d  %-45s @%2d %% %7d req/s  p50 %8.3f ms  p99 %8.3f ms  p99.9 %8.3f ms  errors %d  other load %3.0f %%\n",
			round+1, r.t.name, pct, rate, ms(x.r.P50), ms(x.r.P99), ms(x.r.P999), x.r.Errors, 100*x.foreign)
	}
	return nil
}

// measureTail runs the open-loop generator once against t and charges the
// machine's other load as measure does (the generator's own CPU counted as
// the bench's).
func measureTail(ctx context.Context, o options, e *env, t *target, app *child, rate int) (tailSample, error) {
	time.Sleep(500 * time.Millisecond)
	before, appBefore, busyBefore := cpuTicks(t.pids()), cpuTicks([]int{app.pid()}), machineBusy()
	start := time.Now()
	var res tailResult
	var err error
	if o.gen == genVegeta {
		res, err = runVegeta(ctx, o.vegeta, e.dir, t.url, e.certs.CA, rate, o.hi, o.duration)
	} else {
		res, err = runOpenLoop(ctx, o.openloop, t.url, e.certs.CA, rate, o.hi, o.duration)
	}
	if err != nil {
		return tailSample{}, err
	}
	elapsed := time.Since(start)
	own := cpuTicks(t.pids()) - before + cpuTicks([]int{app.pid()}) - appBefore + res.CPUTicks
	capacity := float64(runtime.NumCPU()) * elapsed.Seconds() * clockTicks
	foreign := max(float64(machineBusy()-busyBefore-own), 0) / capacity
	return tailSample{r: res, foreign: foreign}, nil
}

// tailSummary is one row's open-loop runs at one rate: medians over the
// rounds, errors summed.
type tailSummary struct {
	rate, sentRate float64
	p50, p99, p999 time.Duration
	errors, sent   int64
}

func summarizeTail(runs []tailSample) (tailSummary, bool) {
	if len(runs) == 0 {
		return tailSummary{}, false
	}
	var s tailSummary
	var rate, sent []float64
	var p50, p99, p999 []time.Duration
	for _, x := range runs {
		rate = append(rate, x.r.Rate)
		sent = append(sent, x.r.SentRate)
		p50, p99, p999 = append(p50, x.r.P50), append(p99, x.r.P99), append(p999, x.r.P999)
		s.errors += x.r.Errors
		s.sent += x.r.Sent
	}
	s.rate, s.sentRate = median(rate), median(sent)
	s.p50, s.p99, s.p999 = median(p50), median(p99), median(p999)
	return s, true
}

// tailP99Ratios is, per round both rows ran at pct, r's p99 over ref's.
func tailP99Ratios(r, ref *row, pct int) []float64 {
	byRound := map[int]time.Duration{}
	for _, x := range ref.tail[pct] {
		byRound[x.round] = x.r.P99
	}
	var out []float64
	for _, x := range r.tail[pct] {
		if d, ok := byRound[x.round]; ok && d > 0 {
			out = append(out, float64(x.r.P99)/float64(d))
		}
	}
	return out
}

// generatorCost is the CPU each load generator spent per request, in µs:
// wrk over every run at conns connections, the open-loop generator over
// every open-loop run. On two shared cores the generator's own cost decides whether a
// fixed rate is still below what the machine can do at all.
func generatorCost(rows []*row, conns int) (wrkUS, vegetaUS float64) {
	var wt, wn, vt, vn int64
	for _, r := range rows {
		for _, x := range r.runs[conns] {
			wt, wn = wt+x.r.CPUTicks, wn+x.r.Requests
		}
		for _, runs := range r.tail {
			for _, x := range runs {
				vt, vn = vt+x.r.CPUTicks, vn+x.r.Sent
			}
		}
	}
	us := func(ticks, n int64) float64 {
		if n == 0 {
			return 0
		}
		return float64(ticks) / clockTicks / float64(n) * 1e6
	}
	return us(wt, wn), us(vt, vn)
}

// tailTable renders the open-loop runs as Markdown, one row per target.
func tailTable(rows []*row) string {
	var b strings.Builder
	b.WriteString("| target | hops |")
	for _, pct := range tailPercents {
		fmt.Fprintf(&b, " rate @%[1]d %% | p50 @%[1]d %% | p99 / p99.9 @%[1]d %% | × nginx p99 @%[1]d %% |", pct)
	}
	b.WriteString(" errors |\n| --- | --- |")
	for range tailPercents {
		b.WriteString(" ---: | ---: | ---: | ---: |")
	}
	b.WriteString(" ---: |\n")
	for _, r := range rows {
		if len(r.tail) == 0 {
			continue
		}
		ref := tailRef(rows, r)
		fmt.Fprintf(&b, "| %s | %s |", r.t.name, r.t.shape)
		var errs, sent int64
		for _, pct := range tailPercents {
			s, ok := summarizeTail(r.tail[pct])
			if !ok {
				b.WriteString(" — | — | — | — |")
				continue
			}
			errs += s.errors
			sent += s.sent
			rate := thousands(s.rate)
			if s.sentRate < 0.95*s.rate {
				rate += fmt.Sprintf(" (sent %s)", thousands(s.sentRate))
			}
			x := "—"
			if r.t.shape == "direct" {
				x = "—"
			} else if ref == r {
				x = "1.00×"
			} else if ref != nil {
				x = ratioText(tailP99Ratios(r, ref, pct))
			}
			fmt.Fprintf(&b, " %s | %.3f ms | %.2f / %.2f ms | %s |", rate, ms(s.p50), ms(s.p99), ms(s.p999), x)
		}
		fmt.Fprintf(&b, " %s of %s |\n", thousands(float64(errs)), thousands(float64(sent)))
	}
	return b.String()
}
