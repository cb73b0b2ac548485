// Command sidebyside is minimesh's side-by-side benchmark: wrk against a
// trivial app directly, through one mesh-proxy terminating TLS, through
// nginx, haproxy and Caddy doing the same, through two mesh-proxies
// (outbound → mTLS HTTP/2 → inbound) and through the same chain built from
// two nginx and from two Caddy (originating and terminating mTLS), and the
// mesh-proxy of an older commit (issue 22's start) one and two hops. Every
// target runs at the same time as its own processes and is loaded in turn,
// interleaved over rounds, so drift on the shared cores hits every row
// alike; the rows compared with nginx run back to back with it (order.go).
// After each round's wrk runs, an open-loop generator (bench/openloop, or
// vegeta) loads every target at 50 % and 80 % of the rate nginx reached in
// that round (the tail).
// It prints Markdown tables (requests/s, p50/p99, peak RSS, CPU per 100k
// requests, ratios; the open-loop tail; per-round ratios) and writes them,
// with a perf profile of mesh-proxy, into bench/RESULTS.md.
//
// Usage (see bench/sidebyside/run.sh, which installs wrk, nginx, haproxy,
// Caddy and vegeta and builds the binaries):
//
//	go run ./bench/sidebyside -bin bin -rounds 3 -duration 10s
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) >= 4 && strings.HasPrefix(os.Args[1], "plain-") {
		if err := runPlain(os.Args[1], os.Args[2], os.Args[3], os.Args[4:]...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "app" {
		if err := runApp(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sidebyside:", err)
		os.Exit(1)
	}
}

type options struct {
	bin      string
	oldProxy string // an older mesh-proxy binary: extra one- and two-hop rows
	// profileOld: the old binary's rows are profiled too (an A/B of
	// where the CPU goes).
	profileOld bool
	oldDesc    string // where it came from, for the header
	cache      string
	caddy      string
	vegeta     string
	gen        string // the open-loop generator: genOpenLoop or genVegeta
	openloop   string // bench/openloop's binary, built at start
	tail       bool
	order      string // orderPaired or orderRotated (order.go)
	rounds     int
	duration   time.Duration
	warmup     time.Duration
	hi, lo     int
	tunes      []string
	profile    time.Duration
	results    string
	only       *regexp.Regexp
	keep       bool
	maxOther   float64
	retries    int
	extra      time.Duration
	versions   string
	sizes      string // binary sizes, for the header
	// cpuProfiles: directory this build's mesh-proxies write their Go CPU
	// profiles to (--cpu-profile), one per proxy (go tool pprof -proto merges them).
	cpuProfiles string
	// plain: also the plain-HTTP rows (plain.go).
	plain bool
}

func run() error {
	var o options
	var tunes, only string
	flag.StringVar(&o.bin, "bin", "bin", "directory holding meshd, mesh-proxy and meshctl (make build)")
	oldDefault := startCommit
	if v, ok := os.LookupEnv("BENCH_OLD_PROXY"); ok {
		oldDefault = v
	}
	flag.StringVar(&o.oldProxy, "old-proxy", oldDefault, "an older mesh-proxy: a binary, or a commit of this repository whose mesh-proxy is built (once, into -cache); "+
		"measured as the extra rows \"mesh-proxy (old binary)\", one and two hops, of the same run ($BENCH_OLD_PROXY overrides the default, issue 22's start; empty: none)")
	flag.StringVar(&o.cache, "cache", filepath.Join(".bin", "bench"), "directory of the installed tools (run.sh) and of old mesh-proxy builds")
	flag.StringVar(&o.caddy, "caddy", "", "Caddy binary (default: "+caddyVersion+" as run.sh installs it under -cache)")
	flag.StringVar(&o.vegeta, "vegeta", "", "vegeta binary (default: "+vegetaVersion+" as run.sh installs it under -cache)")
	flag.StringVar(&o.gen, "generator", genOpenLoop, "open-loop generator of the tail: "+genOpenLoop+" (bench/openloop, half vegeta's CPU per request) or "+genVegeta+" ("+vegetaVersion+")")
	flag.StringVar(&o.order, "order", orderPaired, "order of a round's runs: "+orderPaired+" (the nginx row and the mesh-proxy rows of the same hops back to back, order.go) or "+orderRotated+" (every row in turn, as before)")
	flag.BoolVar(&o.tail, "tail", true, "after each round's wrk runs, load every target open-loop (-generator) at 50 % and 80 % of nginx's rate in that round")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; each loads every target once per connection count")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "length of each wrk run (whole seconds)")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load on each target before the first round")
	flag.IntVar(&o.hi, "conns", 64, "connections of the loaded runs")
	flag.IntVar(&o.lo, "conns-low", 1, "connections of the latency runs")
	flag.StringVar(&tunes, "tune", "GOGC=400 GOMEMLIMIT=64MiB", "runtime settings for extra mesh-proxy rows, ';' between settings (empty: none)")
	flag.DurationVar(&o.profile, "profile", 8*time.Second, "perf profile length per profiled target (0: none)")
	flag.StringVar(&o.results, "results", "bench/RESULTS.md", "Markdown file whose side-by-side section is rewritten (empty: print only)")
	flag.StringVar(&only, "only", "", "regexp: measure only targets whose name matches (direct and the nginx rows are kept for the ratios)")
	flag.Float64Var(&o.maxOther, "max-other", 0.2, "repeat a run when other processes used more than this share of the machine during it")
	flag.IntVar(&o.retries, "retries", 1, "how many times a disturbed run is repeated at most")
	flag.DurationVar(&o.extra, "extra", 90*time.Second, "time the whole run may spend waiting for a quiet machine and repeating disturbed runs")
	flag.BoolVar(&o.profileOld, "profile-old", false, "profile the -old-proxy rows too (with -profile)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work dir (configs, logs, perf data)")
	flag.BoolVar(&o.plain, "plain", false, "also measure, one hop without TLS, nginx and two minimal Go proxies doing the same byte work, one with a goroutine per connection and one with an epoll loop per core (plain.go), and the goroutine one behind TLS, in one process and as a process per core (GOMAXPROCS=1, SO_REUSEPORT, nginx's shape): how much of the gap is Go's goroutine-per-connection model")
	flag.StringVar(&o.cpuProfiles, "cpuprofile", "", "directory in which this build's mesh-proxies (not the old binary's, not the -tune rows) write a Go CPU profile each, SERVICE.pprof, when the run ends (go tool pprof -proto merges them)")
	flag.Parse()
	if err := checkOrder(o.order); err != nil {
		return err
	}
	for _, t := range strings.Split(tunes, ";") {
		if t = strings.TrimSpace(t); t != "" {
			o.tunes = append(o.tunes, t)
		}
	}
	if only != "" {
		re, err := regexp.Compile(only)
		if err != nil {
			return err
		}
		o.only = re
	}
	if o.cpuProfiles != "" {
		dir, err := filepath.Abs(o.cpuProfiles)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		o.cpuProfiles = dir
	}
	if o.duration < time.Second {
		return fmt.Errorf("-duration must be at least 1s")
	}
	for _, tool := range []string{"wrk", "nginx", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run bench/sidebyside/run.sh, which installs it", tool)
		}
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	if o.caddy == "" {
		o.caddy = caddyPath(o.cache)
	}
	if o.vegeta == "" {
		o.vegeta = vegetaPath(o.cache)
	}
	if o.caddy, err = filepath.Abs(o.caddy); err != nil {
		return err
	}
	if o.vegeta, err = filepath.Abs(o.vegeta); err != nil {
		return err
	}
	switch o.gen {
	case genVegeta:
		if _, err := os.Stat(o.vegeta); o.tail && err != nil {
			return fmt.Errorf("vegeta %s not found at %s: run bench/sidebyside/run.sh, which installs it (or -tail=false)", vegetaVersion, o.vegeta)
		}
	case genOpenLoop:
		if o.tail {
			if o.openloop, err = buildOpenLoop(context.Background(), o.cache); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("-generator %q: want %s or %s", o.gen, genOpenLoop, genVegeta)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.oldProxy, o.oldDesc, err = oldProxy(ctx, o.oldProxy, o.cache); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "sidebyside-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Println("work dir:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	p := &procs{dir: dir}
	defer p.stopAll()

	// Run copies of the binaries: another `make build` during the run must
	// not swap them underneath (perf could no longer name their symbols).
	o.versions = versions(bin, o) // before the copy: git status of the tree bin/ was built from
	if bin, err = copyBinaries(bin, filepath.Join(dir, "bin")); err != nil {
		return err
	}
	o.sizes = fmt.Sprintf("mesh-proxy %.1f MB", fileMB(filepath.Join(bin, "mesh-proxy")))
	if o.oldProxy != "" {
		o.sizes += fmt.Sprintf(", mesh-proxy (old binary, %s) %.1f MB", o.oldDesc, fileMB(o.oldProxy))
	}
	if _, err := os.Stat(o.caddy); err == nil {
		o.sizes += fmt.Sprintf(", caddy %.1f MB", fileMB(o.caddy))
	}
	certs, err := writeCerts(dir)
	if err != nil {
		return err
	}
	check, err := newCheckClient(certs.CA)
	if err != nil {
		return err
	}
	appAddr, err := freePort()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	app, err := p.start("app", nil, self, "app", appAddr)
	if err != nil {
		return err
	}
	e := &env{ctx: ctx, p: p, dir: dir, bin: bin, app: appAddr, certs: certs, check: check, caddyBin: o.caddy, cpuProfiles: o.cpuProfiles}
	if err := waitFor(ctx, app, "app", 10*time.Second, func() error {
		c, err := net.Dial("tcp", appAddr)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		return err
	}

	// Every target, each in its own processes; a target that cannot be set
	// up is reported and left out rather than failing the whole run.
	var rows []*row
	var skipped []string
	want := func(name string) bool {
		return o.only == nil || name == "app direct" || strings.HasPrefix(name, "nginx") || o.only.MatchString(name)
	}
	add := func(name string, build func() (*target, error)) {
		if ctx.Err() != nil || !want(name) {
			return
		}
		fmt.Printf("setting up %s\n", name)
		t, err := build()
		if err != nil {
			fmt.Fprintf(os.Stderr, "sidebyside: %s left out: %v\n", name, err)
			skipped = append(skipped, fmt.Sprintf("%s: %s", name, firstLine(err.Error())))
			return
		}
		r := &row{t: t, runs: map[int][]sample{}}
		if t.note != "" {
			r.notes = append(r.notes, t.note)
		}
		rows = append(rows, r)
	}
	add("app direct", func() (*target, error) {
		return &target{name: "app direct", shape: "direct", url: "http://" + appAddr + "/"}, nil
	})
	add("nginx", e.nginxOneHop)
	add("haproxy", e.haproxy)
	add("caddy", e.caddyOneHop)
	m, err := e.startMesh()
	if err != nil {
		return err
	}
	add("mesh-proxy", func() (*target, error) { return m.oneHop("pub", "mesh-proxy", nil) })
	if o.oldProxy != "" {
		add("mesh-proxy (old binary)", func() (*target, error) {
			return m.oneHopAt(o.oldProxy, "pubold", "mesh-proxy (old binary)", nil)
		})
	}
	for i, t := range o.tunes {
		name := "mesh-proxy " + t
		add(name, func() (*target, error) { return m.oneHop("pub"+strconv.Itoa(i+1), name, strings.Fields(t)) })
	}
	if o.plain {
		add(plainNginx, e.nginxPlain)
		add(plainGoroutines, func() (*target, error) { return e.plainTarget("plain-goroutines", plainGoroutines) })
		add(plainLoop, func() (*target, error) { return e.plainTarget("plain-loop", plainLoop) })
		add(tlsGoroutines, func() (*target, error) { return e.plainTarget("plain-goroutines-tls", tlsGoroutines) })
		add(tlsProcs, func() (*target, error) { return e.plainTarget("plain-goroutines-tls-procs", tlsProcs) })
	}
	add("nginx → nginx", e.nginxChain)
	add("caddy → caddy", e.caddyChain)
	add("mesh-proxy → mesh-proxy", func() (*target, error) {
		return m.twoHops("api", "web", "mesh-proxy → mesh-proxy", nil)
	})
	if o.oldProxy != "" {
		add("mesh-proxy → mesh-proxy (old binary)", func() (*target, error) {
			return m.twoHopsAt(o.oldProxy, "apiold", "webold", "mesh-proxy → mesh-proxy (old binary)", nil)
		})
	}
	for i, t := range o.tunes {
		name := "mesh-proxy → mesh-proxy " + t
		n := strconv.Itoa(i + 1)
		add(name, func() (*target, error) { return m.twoHops("api"+n, "web"+n, name, strings.Fields(t)) })
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	runs := 2
	if o.tail {
		runs += len(tailPercents)
	}
	// Each run: a quiet second first, half a second's pause, the run.
	total := time.Duration(len(rows)*runs*o.rounds)*(o.duration+1700*time.Millisecond) + time.Duration(len(rows))*o.warmup
	if o.profile >= time.Second {
		total += 4 * (o.profile + 4*time.Second)
	}
	fmt.Printf("%d targets, %d rounds of %s at %d and %d connections (and open-loop at %v %% of nginx: %v): about %s\n",
		len(rows), o.rounds, o.duration, o.hi, o.lo, tailPercents, o.tail, total.Round(time.Minute))
	for _, r := range rows {
		if o.warmup >= time.Second {
			if _, err := runWrk(ctx, r.t.url, o.hi, o.warmup); err != nil {
				return err
			}
		}
	}
	_, port, _ := net.SplitHostPort(appAddr)
	appPort, _ := strconv.Atoi(port)
	extra := o.extra
	for round := range o.rounds {
		// The order changes each round so no target always follows the
		// same one (order.go).
		levels := []int{o.hi, o.lo}
		for _, s := range roundSteps(rows, o.order, round, len(levels)) {
			r, conns := s.r, levels[s.level]
			// A run during which other work took more than -max-other of
			// the machine is repeated (up to -retries times); the least
			// disturbed attempt is kept.
			// Before each attempt, wait (briefly) for a quiet second. Both
			// draw on -extra, so a busy machine costs at most that much
			// more time.
			var best sample
			for attempt := 0; ; attempt++ {
				t0 := time.Now()
				if extra > 0 {
					waitQuiet(ctx, o.maxOther/2, min(5*time.Second, extra))
				}
				x, err := measure(ctx, r.t, app, appPort, conns, o.duration)
				if err != nil {
					return err
				}
				if attempt > 0 {
					extra -= time.Since(t0)
				} else {
					extra -= time.Since(t0) - o.duration - 500*time.Millisecond
				}
				if attempt == 0 || x.foreign < best.foreign {
					best = x
				}
				if x.foreign <= o.maxOther || attempt >= o.retries || extra <= 0 {
					break
				}
				fmt.Printf("round %d  %-45s @%-3d other load %.0f %%: repeating\n", round+1, r.t.name, conns, 100*x.foreign)
			}
			res := best.r
			r.runs[conns] = append(r.runs[conns], best)
			fmt.Printf("round %d  %-45s @%-3d %10.0f req/s  p50 %8.3f ms  p99 %8.3f ms  other load %3.0f %%  µs/req: target %.1f app %.1f wrk %.1f  idle %3.0f %%  app: cs/req %.2f+%.2f kernel %.0f %% conns %d\n",
				round+1, r.t.name, conns, res.RPS, ms(res.P50), ms(res.P99), 100*best.foreign,
				perReqUS(best.cpuTicks, res.Requests), perReqUS(best.appTicks, res.Requests), perReqUS(res.CPUTicks, res.Requests), 100*best.idle,
				perReq(best.appCS.vol, res.Requests), perReq(best.appCS.invol, res.Requests), pct(best.appSys, best.appTicks), best.appConns)
		}
		if o.tail {
			// Peak RSS is the wrk runs' (as without the tail): noted before
			// the open-loop runs, whose high-water mark is cleared after.
			for _, r := range rows {
				r.notePeakRSS()
			}
			if err := tailRound(ctx, o, e, rows, app, round, &extra); err != nil {
				return err
			}
			for _, r := range rows {
				if err := resetPeakRSS(r.t.pids()); err != nil && !r.rssTainted {
					r.rssTainted = true
					r.notes = append(r.notes, "peak RSS includes the open-loop runs ("+err.Error()+")")
				}
			}
		}
	}
	for _, r := range rows {
		r.notePeakRSS()
		for _, c := range r.t.mains {
			if c.exited() {
				r.notes = append(r.notes, c.name+" exited during the run")
			}
		}
	}

	var profiles []profileResult
	if o.profile >= time.Second {
		for _, r := range rows {
			switch r.t.name {
			case "nginx", "mesh-proxy", "nginx → nginx", "mesh-proxy → mesh-proxy",
				plainNginx, plainGoroutines, plainLoop, tlsGoroutines, tlsProcs:
			case "mesh-proxy (old binary)", "mesh-proxy → mesh-proxy (old binary)":
				if !o.profileOld {
					continue
				}
			default:
				continue
			}
			fmt.Printf("profiling %s for %s\n", r.t.name, o.profile)
			pr, err := profileTarget(ctx, dir, r.t, o.hi, o.profile)
			if err != nil {
				fmt.Fprintf(os.Stderr, "sidebyside: profile of %s: %v\n", r.t.name, err)
				continue
			}
			profiles = append(profiles, pr)
		}
	}

	body := report(o, rows, skipped, profiles)
	fmt.Println()
	fmt.Println(body)
	if o.results != "" {
		if err := writeResults(o.results, body); err != nil {
			return err
		}
		fmt.Println("written to", o.results)
	}
	if line := barsLine(rows, o.hi); line != "" {
		fmt.Println(line) // last, for bench/sidebyside/issue22.sh
	}
	return nil
}

// perReqUS is ticks of CPU per request, in microseconds.
func perReqUS(ticks int64, requests int64) float64 {
	if requests == 0 {
		return 0
	}
	return float64(ticks) / clockTicks * 1e6 / float64(requests)
}

// pct is part's share of whole in percent; 0 when whole is.
func pct(part, whole int64) float64 {
	if whole == 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}

// perReq is n per request; 0 without requests.
func perReq(n, requests int64) float64 {
	if requests == 0 {
		return 0
	}
	return float64(n) / float64(requests)
}

// waitQuiet returns after a second in which the machine was busy less than
// threshold (nothing of this benchmark is loaded between runs), or after
// wait.
func waitQuiet(ctx context.Context, threshold float64, wait time.Duration) {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		b0 := machineBusy()
		time.Sleep(time.Second)
		if float64(machineBusy()-b0)/(float64(runtime.NumCPU())*clockTicks) < threshold {
			return
		}
	}
}

// measure runs wrk once against t and charges CPU: the target's processes,
// and the share of the machine nobody of this run used (see sample.foreign).
func measure(ctx context.Context, t *target, app *child, appPort int, conns int, d time.Duration) (sample, error) {
	time.Sleep(500 * time.Millisecond)
	before, busyBefore := cpuTicks(t.pids()), machineBusy()
	appBefore, _ := readStat(app.pid())
	csBefore := ctxSwitches(app.pid())
	start := time.Now()
	res, err := runWrk(ctx, t.url, conns, d)
	if err != nil {
		return sample{}, err
	}
	elapsed := time.Since(start)
	used := cpuTicks(t.pids()) - before
	appCS := ctxSwitches(app.pid()).sub(csBefore)
	appAfter, _ := readStat(app.pid())
	appUsed := appAfter.utime + appAfter.stime - appBefore.utime - appBefore.stime
	appSys := appAfter.stime - appBefore.stime
	appConns := connsTo(t.pids(), appPort)
	own := used + appUsed + res.CPUTicks
	capacity := float64(runtime.NumCPU()) * elapsed.Seconds() * clockTicks
	busy := machineBusy() - busyBefore
	foreign := max(float64(busy-own), 0) / capacity
	idle := max(capacity-float64(busy), 0) / capacity
	return sample{r: res, cpuTicks: used, foreign: foreign, appTicks: appUsed, idle: idle, appCS: appCS, appSys: appSys, appConns: appConns}, nil
}

func report(o options, rows []*row, skipped []string, profiles []profileResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s. %s.\n\n", machine(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	args := strings.Join(os.Args[1:], " ")
	if args == "" {
		args = "(default flags)"
	}
	fmt.Fprintf(&b, "Command: `make bench-sidebyside` (`go run ./bench/sidebyside %s`).\n\n", args)
	fmt.Fprintf(&b, "Versions: %s.\n\n", o.versions)
	fmt.Fprintf(&b, "Binary size (as built, not stripped): %s.\n\n", o.sizes)
	fmt.Fprintf(&b, "%d rounds; in each, %s %s of wrk at %d connections (2 threads) then %s at %d; "+
		"requests/s, p50 and p99 are the median of the rounds, CPU is the target's processes' utime+stime over the %d-connection runs divided by their requests, "+
		"peak RSS is VmHWM summed over each proxy's processes (nginx: master and workers) and shown per hop. "+
		"The app is a Go net/http server answering a fixed 100-byte body; TLS is 1.3 with ECDSA P-256 everywhere; no proxy logs requests; the public port and the inbound apply an AuthorizationPolicy. "+
		"× nginx compares with the nginx row of the same number of hops.\n\n",
		o.rounds, orderText(o.order), o.duration, o.hi, o.duration, o.lo, o.hi)
	b.WriteString(table(rows, o.hi, o.lo))
	if o.rounds > 0 && len(ratioPairs(rows)) > 0 {
		fmt.Fprintf(&b, "\nPer-round ratios (each round's value over the other row's in the same round; median of the %d rounds and, in parentheses, their range):\n\n", o.rounds)
		b.WriteString(ratioTable(rows, o.hi, o.lo))
		if line := barsLine(rows, o.hi); line != "" {
			fmt.Fprintf(&b, "\n%s.\n", strings.ToUpper(line[:1])+line[1:])
		}
	}
	if o.rounds > 0 {
		fmt.Fprintf(&b, "\nWhere the machine's CPU went at %d connections (CPU per request in µs, median of the rounds; idle is the share of the %d cores nobody used; the share of the app's CPU spent in the kernel, the app's context switches per request summed over its threads (voluntary: a thread blocked and was woken; not: it was preempted), and the target's connections open to it at the run's end: how the target's way of talking to the app changes what the app does):\n\n", o.hi, runtime.NumCPU())
		b.WriteString(cpuSplitTable(rows, o.hi))
	}
	if o.tail {
		var tailForeign []float64
		for _, r := range rows {
			for _, runs := range r.tail {
				for _, x := range runs {
					tailForeign = append(tailForeign, x.foreign)
				}
			}
		}
		if len(tailForeign) > 0 {
			wrkUS, vegUS := generatorCost(rows, o.hi)
			var pcts []string
			for _, p := range tailPercents {
				pcts = append(pcts, fmt.Sprintf("%d %%", p))
			}
			fmt.Fprintf(&b, "\nOpen-loop tail (%s): after each round's wrk runs, every target in turn gets %s of GET at a fixed rate, %s of the requests/s nginx reached at %d connections in that round "+
				"(nginx → nginx's for two hops, one-hop nginx's for the others), sent on schedule whether or not answers have arrived, over at most %[4]d keep-alive HTTP/1.1 connections and TLS 1.3 as wrk's "+
				"(a request due while all %[4]d are busy waits for one, its latency counted from when it was due); "+
				"rate is the rate asked for (median of the rounds), percentiles are exact over every request of a run (errors included) and the median of the rounds, "+
				"× nginx p99 is the median (range) of the per-round ratios to the nginx row of the same hops, errors are transport errors and answers other than 200 over all rounds. "+
				"wrk's p99 above is closed-loop at saturation (its own queue) and informational. Other load during these runs: median %.0f %%, at most %.0f %% (not repeated). "+
				"The generators' own CPU per request: %[9]s %.1[7]f µs, wrk %.1[8]f µs at %[4]d connections; \"sent\" marks a rate %[9]s fell more than 5 %% short of.\n\n",
				o.generatorName(), o.duration, strings.Join(pcts, " and "), o.hi, 100*median(tailForeign), 100*slices.Max(tailForeign), vegUS, wrkUS, o.gen)
			b.WriteString(tailTable(rows))
		}
	}
	var foreign []float64
	worst, worstAt := 0.0, ""
	for _, r := range rows {
		for conns, runs := range r.runs {
			for i, x := range runs {
				foreign = append(foreign, x.foreign)
				if x.foreign > worst {
					worst, worstAt = x.foreign, fmt.Sprintf("%s @%d, round %d", r.t.name, conns, i+1)
				}
			}
		}
	}
	if len(foreign) > 0 {
		fmt.Fprintf(&b, "\nOther load (CPU used by anything but the target, the app and wrk, including softirq time no process is charged for; "+
			"each run waited up to 5 s for a quiet second, and a run above %.0f %% was repeated up to %d times, the least disturbed attempt kept, within %s in all): "+
			"median %.0f %% of the machine over a run, at most %.0f %% (%s).\n", 100*o.maxOther, o.retries, o.extra, 100*median(foreign), 100*worst, worstAt)
	}
	for _, r := range rows {
		for _, n := range r.notes {
			fmt.Fprintf(&b, "\nNote: %s: %s.\n", r.t.name, n)
		}
	}
	for _, s := range skipped {
		fmt.Fprintf(&b, "\nLeft out: %s\n", s)
	}
	if len(profiles) > 0 {
		fmt.Fprintf(&b, "\nCPU profiles under %d connections (perf record -F 999 on the target's processes, self time, kernel included; "+
			"a separate run, not part of the table):\n\n", o.hi)
		for _, p := range profiles {
			b.WriteString(profileMarkdown(p))
			b.WriteString("\n")
		}
	}
	return b.String()
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(v)
				if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
					mem = fmt.Sprintf(", %.0f GiB", kb/(1<<20))
				}
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d cores (nproc), %s%s%s", runtime.NumCPU(), model, mem, kernel)
}

func versions(bin string, o options) string {
	// The first n words of the first line; wrk -v exits 1 after printing.
	get := func(n int, name string, args ...string) string {
		out, _ := exec.Command(name, args...).CombinedOutput()
		f := strings.Fields(firstLine(strings.TrimSpace(string(out))))
		if len(f) == 0 {
			return name + " ?"
		}
		return strings.Join(f[:min(n, len(f))], " ")
	}
	// The tree the binaries were built from: bin/ is `make build` of the
	// working tree, which may hold changes not yet committed.
	tree := get(1, "git", "rev-parse", "--short", "HEAD")
	if out, err := exec.Command("git", "status", "--porcelain", "--", "cmd", "dataplane", "certs", "api").Output(); err == nil && len(out) > 0 {
		tree += " with uncommitted changes in cmd/, dataplane/"
	}
	return strings.Join([]string{
		"mesh-proxy " + get(1, filepath.Join(bin, "mesh-proxy"), "--version") + " built from " + tree + " (" + runtime.Version() + ")",
		get(3, "nginx", "-v"),
		get(3, "haproxy", "-v"),
		get(2, "wrk", "-v"),
		moduleVersion(o.caddy),
		o.generatorName(),
	}, "; ")
}

func copyBinaries(from, to string) (string, error) {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return "", err
	}
	for _, name := range []string{"meshd", "mesh-proxy", "meshctl"} {
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			return "", fmt.Errorf("%w (run make build)", err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o700); err != nil {
			return "", err
		}
	}
	return to, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
