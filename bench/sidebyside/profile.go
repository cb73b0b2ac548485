package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// profileResult is where one target's processes spent their CPU under load,
// from perf (self time per symbol, kernel included).
type profileResult struct {
	target     string
	samples    string // perf's own sample count line, if any
	categories []share
	top        []symbolShare
	// From perf stat over the same window: per request, system calls and
	// context switches of the target's processes.
	syscallsPerReq, switchesPerReq float64
	// byName is system calls per request by name, for the calls a proxy
	// makes per request (reads, writes, waits, wakes), largest first.
	byName []perRequest
}

// perRequest is how many calls of one name a request cost.
type perRequest struct {
	name string
	n    float64
}

// namedSyscalls are the system calls counted by name in a profile: what a
// proxy does per request (read, write), how it waits (epoll), and what the
// Go runtime adds (futex wakes, sysmon's nanosleep, yields, signals).
var namedSyscalls = []string{"read", "recvfrom", "readv", "write", "writev", "sendto", "getsockopt",
	"epoll_wait", "epoll_pwait", "futex", "nanosleep", "sched_yield", "tgkill", "madvise"}

type share struct {
	name string
	pct  float64
}

type symbolShare struct {
	pct      float64
	dso, sym string
}

// profileTarget loads t at conns connections and records its processes
// with perf for d. The load of this run is not part of the table.
func profileTarget(ctx context.Context, dir string, t *target, conns int, d time.Duration) (profileResult, error) {
	res := profileResult{target: t.name}
	data := filepath.Join(dir, "perf-"+strings.Join(strings.FieldsFunc(t.name, func(r rune) bool {
		return !('a' <= r && r <= 'z' || '0' <= r && r <= '9')
	}), "-")+".data")
	wrkDone := make(chan error, 1)
	var load wrkResult
	go func() {
		var err error
		load, err = runWrk(ctx, t.url, conns, d+3*time.Second)
		wrkDone <- err
	}()
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	var pids []string
	for _, p := range t.pids() {
		pids = append(pids, strconv.Itoa(p))
	}
	secs := strconv.Itoa(int(d.Seconds()))
	statOut := make(chan []byte, 1)
	go func() {
		events := "raw_syscalls:sys_enter,context-switches"
		for _, n := range namedSyscalls {
			// perf stat fails whole on an event this kernel lacks
			// (arm64 has no epoll_wait, for one).
			if tracepoint("syscalls/sys_enter_" + n) {
				events += ",syscalls:sys_enter_" + n
			}
		}
		out, _ := exec.CommandContext(ctx, "perf", "stat", "-x", ",", "-e", events,
			"-p", strings.Join(pids, ","), "--", "sleep", secs).CombinedOutput()
		statOut <- out
	}()
	rec := exec.CommandContext(ctx, "perf", "record", "-g", "-F", "999", "-p", strings.Join(pids, ","),
		"-o", data, "--", "sleep", secs)
	recOut, recErr := rec.CombinedOutput()
	stat := <-statOut
	if err := <-wrkDone; err != nil {
		return res, err
	}
	if recErr != nil {
		return res, fmt.Errorf("sidebyside: perf record: %w\n%s", recErr, recOut)
	}
	if reqs := load.RPS * d.Seconds(); reqs > 0 {
		counts := parsePerfStat(string(stat))
		res.syscallsPerReq = float64(counts["raw_syscalls:sys_enter"]) / reqs
		res.switchesPerReq = float64(counts["context-switches"]) / reqs
		res.byName = syscallsByName(counts, reqs)
	}
	out, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children",
		"-g", "none", "--sort", "dso,sym", "--percent-limit", "0.05").Output()
	if err != nil {
		return res, fmt.Errorf("sidebyside: perf report: %w", err)
	}
	syms := parsePerf(string(out))
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "# Samples:") {
			res.samples = strings.TrimSpace(strings.TrimPrefix(line, "#"))
		}
	}
	cats := map[string]float64{}
	for _, s := range syms {
		cats[category(s.dso, s.sym)] += s.pct
	}
	for k, v := range cats {
		res.categories = append(res.categories, share{k, v})
	}
	sort.Slice(res.categories, func(i, j int) bool { return res.categories[i].pct > res.categories[j].pct })
	if len(syms) > 15 {
		syms = syms[:15]
	}
	res.top = syms
	return res, nil
}

// syscallsByName is perf stat's per-name counts per request, those of at
// least 0.01 per request, largest first.
func syscallsByName(counts map[string]int64, reqs float64) []perRequest {
	var out []perRequest
	for _, n := range namedSyscalls {
		if v := float64(counts["syscalls:sys_enter_"+n]) / reqs; v >= 0.01 {
			out = append(out, perRequest{n, v})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].n > out[j].n })
	return out
}

// tracepoint reports whether the kernel has the tracepoint (tracefs, where
// perf finds it).
func tracepoint(name string) bool {
	for _, dir := range []string{"/sys/kernel/tracing/events/", "/sys/kernel/debug/tracing/events/"} {
		if _, err := os.Stat(dir + name); err == nil {
			return true
		}
	}
	return false
}

// parsePerfStat reads `perf stat -x ,` lines: value,unit,event,...
func parsePerfStat(out string) map[string]int64 {
	m := map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			m[f[2]] = n
		}
	}
	return m
}

// parsePerf reads `perf report --stdio --sort dso,sym` lines such as
//
//	12.34%  mesh-proxy        [.] runtime.mallocgc
//	 3.10%  [kernel.kallsyms] [k] do_syscall_64
func parsePerf(out string) []symbolShare {
	var syms []symbolShare
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		pctStr, rest, ok := strings.Cut(line, "%")
		if !ok {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSpace(pctStr), 64)
		if err != nil {
			continue
		}
		var dso, sym string
		for _, mark := range []string{"[.]", "[k]"} {
			if i := strings.Index(rest, mark); i >= 0 {
				dso = strings.TrimSuffix(strings.TrimSpace(rest[:i]), " (deleted)")
				sym = strings.TrimSpace(rest[i+len(mark):])
				if mark == "[k]" && dso != "[vdso]" {
					dso = "[kernel]"
				}
				break
			}
		}
		if sym == "" {
			continue
		}
		syms = append(syms, symbolShare{pct, dso, sym})
	}
	sort.SliceStable(syms, func(i, j int) bool { return syms[i].pct > syms[j].pct })
	return syms
}

// category puts a symbol into one of a few buckets that say what limits a
// proxy: the kernel (system calls, loopback TCP, context switches), TLS,
// garbage collection and allocation, goroutine stacks (growth and the
// unwinding it needs), the scheduler with channels, locks and contexts,
// map hashing (HTTP headers are maps), HTTP and proxy code (with the
// strings, bytes and io it calls), and the rest.
func category(dso, sym string) string {
	has := func(subs ...string) bool {
		for _, k := range subs {
			if strings.Contains(sym, k) {
				return true
			}
		}
		return false
	}
	switch {
	case strings.HasPrefix(dso, "[kernel"):
		return "kernel (syscalls, TCP, switches)"
	case dso == "[vdso]":
		return "clock reads (vdso)"
	case strings.Contains(dso, "libcrypto") || strings.Contains(dso, "libssl"):
		return "TLS and crypto"
	case strings.HasPrefix(sym, "crypto/") || strings.HasPrefix(sym, "vendor/golang.org/x/crypto") || strings.HasPrefix(sym, "golang.org/x/crypto"):
		return "TLS and crypto"
	case has("aeshash", "memhash", "strhash", "internal/runtime/maps", "runtime.mapaccess", "runtime.mapassign", "runtime.mapdelete", "runtime.mapiter"):
		return "maps and hashing (headers)"
	case strings.HasPrefix(sym, "runtime.") || strings.HasPrefix(sym, "internal/runtime") || strings.HasPrefix(sym, "gcWriteBarrier"):
		switch {
		case has("gc", "GC", "malloc", "scanobject", "scanblock", "scanstack", "mark", "sweep", "Span", "span", "heap", "Heap",
			"greyobject", "findObject", "wbBuf", "WriteBarrier", "memclr", "bulkBarrier", "nextFree", "mcache", "mcentral",
			"newobject", "makeslice", "growslice", "pageAlloc", "typePointers", "tryDefer"):
			return "GC and allocation"
		case has("runtime.step", "pcvalue", "funcInfo", "findfunc", "copystack", "morestack", "newstack", "unwinder",
			"adjustframe", "adjustpointers", "stackalloc", "stackfree", "stackcache", "gentraceback", "readvarint", "funcdata", "pcdatavalue"):
			return "goroutine stacks (growth, unwinding)"
		}
		return "scheduler, channels, locks"
	case strings.HasPrefix(sym, "net/http") || strings.HasPrefix(sym, "golang.org/x/net") || strings.HasPrefix(sym, "vendor/golang.org/x/net") ||
		strings.HasPrefix(sym, "net/textproto") || strings.HasPrefix(sym, "bufio") || strings.HasPrefix(sym, "minimesh/") ||
		strings.HasPrefix(sym, "net/url") || strings.HasPrefix(sym, "mime"):
		return "HTTP and proxy code"
	case strings.HasPrefix(sym, "sync.") || strings.HasPrefix(sym, "sync/") || strings.HasPrefix(sym, "context.") || strings.HasPrefix(sym, "internal/sync"):
		return "scheduler, channels, locks"
	case strings.HasPrefix(sym, "time."):
		return "clock reads (vdso)"
	case strings.HasPrefix(sym, "io.") || strings.HasPrefix(sym, "strings.") || strings.HasPrefix(sym, "bytes.") ||
		strings.HasPrefix(sym, "strconv.") || strings.HasPrefix(sym, "unicode") || strings.HasPrefix(sym, "internal/bytealg") || strings.HasPrefix(sym, "slices."):
		return "HTTP and proxy code"
	case strings.HasPrefix(sym, "net.") || strings.HasPrefix(sym, "internal/poll") || strings.HasPrefix(sym, "syscall.") || strings.HasPrefix(sym, "internal/syscall"):
		return "Go net and syscall wrappers"
	case strings.HasPrefix(dso, "nginx") || strings.HasPrefix(dso, "haproxy"):
		return "HTTP and proxy code"
	case strings.HasPrefix(dso, "libc"):
		return "libc"
	}
	return "other"
}
