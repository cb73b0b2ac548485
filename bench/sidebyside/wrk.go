package main

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	Requests int64
	Elapsed  time.Duration
	RPS      float64
	P50, P99 time.Duration
	Errors   int64 // socket errors of every kind
	Non2xx   int64
	CPUTicks int64 // wrk's own user+system time, in clock ticks
}

// runWrk runs wrk with one thread per 32 connections (at least one, at
// most two: the machine has two cores and shares them with the proxies).
func runWrk(ctx context.Context, url string, conns int, d time.Duration) (wrkResult, error) {
	threads := min(max(conns/32, 1), 2)
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk",
		"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("sidebyside: wrk %s: %w\n%s", url, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return r, fmt.Errorf("%w\n%s", err, out)
	}
	if ps := cmd.ProcessState; ps != nil {
		r.CPUTicks = int64((ps.UserTime() + ps.SystemTime()) * clockTicks / time.Second)
	}
	return r, nil
}

// parseWrk reads wrk's --latency output.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveReq, have50, have99 bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "50%":
			d, err := time.ParseDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("sidebyside: wrk p50 %q: %w", f[1], err)
			}
			r.P50, have50 = d, true
		case len(f) == 2 && f[0] == "99%":
			d, err := time.ParseDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("sidebyside: wrk p99 %q: %w", f[1], err)
			}
			r.P99, have99 = d, true
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("sidebyside: wrk requests %q: %w", f[0], err)
			}
			d, err := time.ParseDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return r, fmt.Errorf("sidebyside: wrk elapsed %q: %w", f[3], err)
			}
			r.Requests, r.Elapsed, haveReq = n, d, true
		case strings.HasPrefix(strings.TrimSpace(line), "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.Errors += n
			}
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			r.Non2xx, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		}
	}
	if !haveReq || !have50 || !have99 {
		return r, fmt.Errorf("sidebyside: wrk output without requests or latency distribution")
	}
	if r.Elapsed > 0 {
		r.RPS = float64(r.Requests) / r.Elapsed.Seconds()
	}
	return r, nil
}
