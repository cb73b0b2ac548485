package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"minimesh/bench/internal/quantile"
)

// The open-loop tail: vegeta sends at a fixed rate whether or not answers
// have arrived (a request in flight does not hold back the next one; vegeta
// adds workers as needed), so a proxy that stalls is charged the whole wait
// of every request scheduled behind the stall. wrk's closed loop, by
// contrast, slows down with the target and its p99 at saturation measures
// its own queue.

// tailResult is one vegeta run: exact percentiles over every result (errors
// included, with the latency vegeta measured for them).
type tailResult struct {
	Rate           float64 // requests/s asked for
	Sent           int64
	SentRate       float64 // requests/s actually sent (first to last send)
	P50, P99, P999 time.Duration
	Errors         int64 // transport errors and answers other than 200
	CPUTicks       int64 // vegeta's own user+system time
}

// runVegeta sends GET url at rate requests/s for d over at most conns
// keep-alive HTTP/1.1 connections (as wrk does; -http2=false), trusting ca
// for https URLs, and reads every result back through `vegeta encode -to
// csv`. The connections are bounded as a service's client pool is: a
// request due while all are busy waits in vegeta for one (its latency
// counts from its scheduled send, as vegeta starts a worker for it on
// schedule), instead of dialing thousands of TLS connections into a proxy
// that stalled, which measured the generator's collapse, not the proxy.
func runVegeta(ctx context.Context, bin, dir, url, ca string, rate, conns int, d time.Duration) (tailResult, error) {
	if rate < 1 {
		return tailResult{}, fmt.Errorf("sidebyside: vegeta rate %d: must be at least 1 request/s", rate)
	}
	ctx, cancel := context.WithTimeout(ctx, d+60*time.Second)
	defer cancel()
	targets := filepath.Join(dir, "vegeta-targets")
	if err := os.WriteFile(targets, []byte("GET "+url+"\n"), 0o600); err != nil {
		return tailResult{}, err
	}
	out := filepath.Join(dir, "vegeta-results.bin")
	defer os.Remove(out)
	attack := exec.CommandContext(ctx, bin, "attack",
		"-targets", targets, "-rate", strconv.Itoa(rate)+"/1s", "-duration", d.String(),
		"-http2=false", "-keepalive=true", "-root-certs", ca, "-max-connections", strconv.Itoa(conns),
		"-timeout", "10s", "-max-body", "0", "-redirects", "0", "-output", out)
	// vegeta costs 3-4 times wrk's CPU per request (a timer wake-up per
	// request, net/http's client, a gob record per result) on the two
	// cores it shares with the targets; less frequent GC cuts about 15 %.
	attack.Env = append(os.Environ(), "GOGC=400")
	if msg, err := attack.CombinedOutput(); err != nil {
		return tailResult{}, fmt.Errorf("sidebyside: vegeta attack %s: %w\n%s", url, err, msg)
	}
	encode := exec.CommandContext(ctx, bin, "encode", "-to", "csv", out)
	var stderr bytes.Buffer
	encode.Stderr = &stderr
	csvOut, err := encode.Output()
	if err != nil {
		return tailResult{}, fmt.Errorf("sidebyside: vegeta encode: %w\n%s", err, stderr.Bytes())
	}
	r, err := parseVegetaCSV(bytes.NewReader(csvOut))
	if err != nil {
		return r, err
	}
	r.Rate = float64(rate)
	if ps := attack.ProcessState; ps != nil {
		r.CPUTicks = int64((ps.UserTime() + ps.SystemTime()) * clockTicks / time.Second)
	}
	return r, nil
}

// parseVegetaCSV reads `vegeta encode -to csv` output: one record per
// request, 12 fields, no header: timestamp (Unix ns), code, latency (ns),
// bytes out, bytes in, error, body, attack, seq, method, URL, headers.
func parseVegetaCSV(r io.Reader) (tailResult, error) {
	var res tailResult
	rd := csv.NewReader(r)
	rd.FieldsPerRecord = 12
	rd.ReuseRecord = true
	var lat []time.Duration
	first, last := int64(math.MaxInt64), int64(math.MinInt64)
	for line := 1; ; line++ {
		rec, err := rd.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("sidebyside: vegeta csv: %w", err)
		}
		ts, err := strconv.ParseInt(rec[0], 10, 64)
		if err != nil {
			return res, fmt.Errorf("sidebyside: vegeta csv line %d: timestamp %q: %w", line, rec[0], err)
		}
		code, err := strconv.Atoi(rec[1])
		if err != nil {
			return res, fmt.Errorf("sidebyside: vegeta csv line %d: code %q: %w", line, rec[1], err)
		}
		ns, err := strconv.ParseInt(rec[2], 10, 64)
		if err != nil || ns < 0 {
			return res, fmt.Errorf("sidebyside: vegeta csv line %d: latency %q: not a duration in ns", line, rec[2])
		}
		first, last = min(first, ts), max(last, ts)
		lat = append(lat, time.Duration(ns))
		if code != 200 || rec[5] != "" {
			res.Errors++
		}
	}
	if len(lat) == 0 {
		return res, fmt.Errorf("sidebyside: vegeta sent no request")
	}
	res.Sent = int64(len(lat))
	if len(lat) > 1 && last > first {
		res.SentRate = float64(len(lat)-1) / time.Duration(last-first).Seconds()
	}
	slices.Sort(lat)
	res.P50, res.P99, res.P999 = quantile.NearestRank(lat, 0.50), quantile.NearestRank(lat, 0.99), quantile.NearestRank(lat, 0.999)
	return res, nil
}
