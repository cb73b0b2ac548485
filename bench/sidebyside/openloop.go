package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The open-loop generators: "openloop" (bench/openloop, built by this
// bench: 32 µs of CPU per request, wrk 18) or "vegeta" (pinned, installed
// by run.sh: 67 µs, which saturated a two-core machine at 80 % of nginx's
// rate). Both send GET on schedule over at most -conns
// keep-alive HTTP/1.1 connections with TLS 1.3 and charge a request from
// when it was due.
const (
	genOpenLoop = "openloop"
	genVegeta   = "vegeta"
)

// buildOpenLoop builds bench/openloop into cache and returns its path.
func buildOpenLoop(ctx context.Context, cache string) (string, error) {
	out := filepath.Join(cache, "openloop", "openloop")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./bench/openloop")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("sidebyside: building bench/openloop: %w\n%s", err, msg)
	}
	return filepath.Abs(out)
}

// runOpenLoop is runVegeta with bench/openloop.
func runOpenLoop(ctx context.Context, bin, url, ca string, rate, conns int, d time.Duration) (tailResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-url", url, "-rate", strconv.Itoa(rate), "-duration", d.String(),
		"-conns", strconv.Itoa(conns), "-ca", ca, "-timeout", "10s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return tailResult{}, fmt.Errorf("sidebyside: openloop %s: %w\n%s", url, err, stderr.String())
	}
	var got struct {
		Sent     int64   `json:"sent"`
		SentRate float64 `json:"sent_rate"`
		P50      int64   `json:"p50_ns"`
		P99      int64   `json:"p99_ns"`
		P999     int64   `json:"p999_ns"`
		Errors   int64   `json:"errors"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		return tailResult{}, fmt.Errorf("sidebyside: openloop's output %q: %w", out, err)
	}
	if got.Sent == 0 {
		return tailResult{}, fmt.Errorf("sidebyside: openloop sent no request")
	}
	r := tailResult{Rate: float64(rate), Sent: got.Sent, SentRate: got.SentRate, Errors: got.Errors,
		P50: time.Duration(got.P50), P99: time.Duration(got.P99), P999: time.Duration(got.P999)}
	if ps := cmd.ProcessState; ps != nil {
		r.CPUTicks = int64((ps.UserTime() + ps.SystemTime()) * clockTicks / time.Second)
	}
	return r, nil
}

// generatorName names the open-loop generator as the report does.
func (o options) generatorName() string {
	if o.gen == genVegeta {
		return moduleVersion(o.vegeta)
	}
	return "bench/openloop (this repository)"
}
