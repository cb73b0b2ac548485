package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vegetaCSV is `vegeta encode -to csv` of two real attacks (v12.13.0,
// -max-body 0): three answers and one refused connection, whose error text
// holds quotes.
const vegetaCSV = `1796432693641294114,200,4701135,0,0,,,,0,GET,http://127.0.0.1:18777/,Q29udGVudC1MZW5ndGg6IDMxNw0KDQo=
1796432695317941159,0,465653,0,0,"Get ""http://127.0.0.1:18778/"": dial tcp 0.0.0.0:0->127.0.0.1:18778: connect: connection refused",,,0,GET,http://127.0.0.1:18778/,
1796432693974590909,200,1358678,0,0,,,,1,GET,http://127.0.0.1:18777/,Q29udGVudC1MZW5ndGg6IDMxNw0KDQo=
1796432694308545017,503,1355192,0,0,,,,2,GET,http://127.0.0.1:18777/,Q29udGVudC1MZW5ndGg6IDMxNw0KDQo=
`

func TestParseVegetaCSV(t *testing.T) {
	r, err := parseVegetaCSV(strings.NewReader(vegetaCSV))
	if err != nil {
		t.Fatal(err)
	}
	// Sorted latencies: 465653 1355192 1358678 4701135 (ns); nearest rank.
	want := tailResult{Sent: 4, P50: 1355192, P99: 4701135, P999: 4701135, Errors: 2,
		SentRate: 3 / (time.Duration(1796432695317941159 - 1796432693641294114)).Seconds()}
	if r != want {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	for name, bad := range map[string]string{
		"empty":        "",
		"field count":  "1,200,5,0,0,,,,0,GET,http://x/\n",
		"latency":      strings.Replace(vegetaCSV, ",4701135,", ",4.7ms,", 1),
		"negative":     strings.Replace(vegetaCSV, ",4701135,", ",-1,", 1),
		"code":         strings.Replace(vegetaCSV, ",503,", ",x,", 1),
		"timestamp":    strings.Replace(vegetaCSV, "1796432693641294114", "now", 1),
		"bare quote":   "1,200,5,0,0,a\"b,,,0,GET,http://x/,\n",
		"gob not csv?": "\x0f\xff\x81\x03\x01\x01\x06Result",
	} {
		if _, err := parseVegetaCSV(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestPerRoundAndRatioText(t *testing.T) {
	got := perRound([]float64{10, 20, 0, 30, 5}, []float64{20, 0, 20, 20})
	if fmt.Sprint(got) != "[0.5 1.5]" {
		t.Fatalf("perRound = %v, want [0.5 1.5] (round 2 has no reference, round 3 no value, round 5 no pair)", got)
	}
	for _, tc := range []struct {
		v    []float64
		want string
	}{
		{nil, "—"},
		{[]float64{0.684}, "0.68×"},
		{[]float64{0.78, 0.61, 0.68}, "0.68× (0.61–0.78)"},
		{[]float64{1, 2, 3, 4}, "2.50× (1.00–4.00)"},
	} {
		if got := ratioText(tc.v); got != tc.want {
			t.Errorf("ratioText(%v) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// benchRow is a row with per-round wrk results at 64 and 1 connections:
// rps64[i], cpu ticks at 64 in round i (over 1000 requests), rps1[i].
func benchRow(name, shape string, rps64 []float64, ticks []int64, rps1 []float64) *row {
	r := &row{t: &target{name: name, shape: shape}, runs: map[int][]sample{}}
	for i := range rps64 {
		r.runs[64] = append(r.runs[64], sample{r: wrkResult{RPS: rps64[i], Requests: 1000}, cpuTicks: ticks[i]})
		r.runs[1] = append(r.runs[1], sample{r: wrkResult{RPS: rps1[i], Requests: 100}})
	}
	return r
}

func TestRatioTable(t *testing.T) {
	rows := []*row{
		benchRow("app direct", "direct", []float64{50, 50, 50}, []int64{0, 0, 0}, []float64{9, 9, 9}),
		benchRow("nginx", "one hop", []float64{100, 200, 100}, []int64{10, 10, 10}, []float64{10, 10, 10}),
		benchRow("haproxy", "one hop", []float64{100, 100, 100}, []int64{10, 10, 10}, []float64{10, 10, 10}),
		benchRow("caddy", "one hop", []float64{50, 50, 25}, []int64{40, 40, 40}, []float64{5, 5, 5}),
		benchRow("mesh-proxy", "one hop", []float64{80, 100, 60}, []int64{15, 20, 30}, []float64{9, 8, 7}),
		benchRow("mesh-proxy (old binary)", "one hop", []float64{40, 50, 60}, []int64{15, 15, 15}, []float64{9, 8, 7}),
		benchRow("nginx → nginx", "two hops", []float64{50, 50, 50}, []int64{20, 20, 20}, []float64{4, 4, 4}),
		benchRow("caddy → caddy", "two hops", []float64{10, 10, 10}, []int64{80, 80, 80}, []float64{2, 2, 2}),
		benchRow("mesh-proxy → mesh-proxy", "two hops", []float64{40, 25, 30}, []int64{40, 40, 40}, []float64{2, 2, 2}),
	}
	got := ratioTable(rows, 64, 1)
	want := `| ratio | req/s @64 | req/s @1 | CPU per request @64 |
| --- | ---: | ---: | ---: |
| caddy / nginx | 0.25× (0.25–0.50) | 0.50× (0.50–0.50) | 4.00× (4.00–4.00) |
| mesh-proxy / nginx | 0.60× (0.50–0.80) | 0.80× (0.70–0.90) | 2.00× (1.50–3.00) |
| mesh-proxy (old binary) / nginx | 0.40× (0.25–0.60) | 0.80× (0.70–0.90) | 1.50× (1.50–1.50) |
| caddy → caddy / nginx → nginx | 0.20× (0.20–0.20) | 0.50× (0.50–0.50) | 4.00× (4.00–4.00) |
| mesh-proxy → mesh-proxy / nginx → nginx | 0.60× (0.50–0.80) | 0.50× (0.50–0.50) | 2.00× (2.00–2.00) |
| mesh-proxy / caddy | 2.00× (1.60–2.40) | 1.60× (1.40–1.80) | 0.50× (0.38–0.75) |
| mesh-proxy → mesh-proxy / caddy → caddy | 3.00× (2.50–4.00) | 1.00× (1.00–1.00) | 0.50× (0.50–0.50) |
| mesh-proxy / mesh-proxy (old binary) | 2.00× (1.00–2.00) | 1.00× (1.00–1.00) | 1.33× (1.00–2.00) |
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestTailTable(t *testing.T) {
	tail := func(round int, rate float64, sentRate float64, p99, p999 time.Duration, errs int64) tailSample {
		return tailSample{round: round, r: tailResult{Rate: rate, SentRate: sentRate, Sent: 1000, P50: time.Millisecond, P99: p99, P999: p999, Errors: errs}}
	}
	nginx := &row{t: &target{name: "nginx", shape: "one hop"}, tail: map[int][]tailSample{
		50: {tail(0, 1000, 1000, 2*time.Millisecond, 4*time.Millisecond, 0), tail(1, 1200, 1200, 4*time.Millisecond, 8*time.Millisecond, 0)},
		80: {tail(0, 1600, 1600, 10*time.Millisecond, 20*time.Millisecond, 0), tail(1, 1920, 1900, 10*time.Millisecond, 30*time.Millisecond, 1)},
	}}
	mesh := &row{t: &target{name: "mesh-proxy", shape: "one hop"}, tail: map[int][]tailSample{
		// Round 1's p99 ratios: 3 and 1; round 2's: 1.5 and 4.
		50: {tail(0, 1000, 1000, 6*time.Millisecond, 9*time.Millisecond, 2), tail(1, 1200, 1200, 6*time.Millisecond, 9*time.Millisecond, 0)},
		80: {tail(0, 1600, 1000, 10*time.Millisecond, 50*time.Millisecond, 0), tail(1, 1920, 1100, 40*time.Millisecond, 90*time.Millisecond, 3)},
	}}
	direct := &row{t: &target{name: "app direct", shape: "direct"}, tail: map[int][]tailSample{50: {tail(0, 1000, 1000, time.Millisecond, time.Millisecond, 0)}}}
	chain := &row{t: &target{name: "mesh-proxy → mesh-proxy", shape: "two hops"}, tail: map[int][]tailSample{50: {tail(0, 500, 500, time.Millisecond, time.Millisecond, 0)}}}
	untouched := &row{t: &target{name: "haproxy", shape: "one hop"}}
	got := tailTable([]*row{direct, nginx, untouched, mesh, chain})
	want := `| target | hops | rate @50 % | p50 @50 % | p99 / p99.9 @50 % | × nginx p99 @50 % | rate @80 % | p50 @80 % | p99 / p99.9 @80 % | × nginx p99 @80 % | errors |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| app direct | direct | 1,000 | 1.000 ms | 1.00 / 1.00 ms | — | — | — | — | — | 0 of 1,000 |
| nginx | one hop | 1,100 | 1.000 ms | 3.00 / 6.00 ms | 1.00× | 1,760 | 1.000 ms | 10.00 / 25.00 ms | 1.00× | 1 of 4,000 |
| mesh-proxy | one hop | 1,100 | 1.000 ms | 6.00 / 9.00 ms | 2.25× (1.50–3.00) | 1,760 (sent 1,050) | 1.000 ms | 25.00 / 70.00 ms | 2.50× (1.00–4.00) | 5 of 4,000 |
| mesh-proxy → mesh-proxy | two hops | 500 | 1.000 ms | 1.00 / 1.00 ms | — | — | — | — | — | 0 of 1,000 |
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if ref := tailRef([]*row{direct, nginx, mesh, chain}, chain); ref != nil {
		t.Errorf("two hops without an nginx chain row: reference %s", ref.t.name)
	}
}

func TestGeneratorCost(t *testing.T) {
	r := &row{t: &target{name: "x"}, runs: map[int][]sample{
		64: {{r: wrkResult{Requests: 10000, CPUTicks: 50}}, {r: wrkResult{Requests: 10000, CPUTicks: 30}}},
		1:  {{r: wrkResult{Requests: 10, CPUTicks: 1000}}},
	}, tail: map[int][]tailSample{50: {{r: tailResult{Sent: 5000, CPUTicks: 100}}}}}
	wrk, veg := generatorCost([]*row{r}, 64)
	// wrk: 0.8 s over 20000 requests = 40 µs; vegeta: 1 s over 5000 = 200 µs.
	if fmt.Sprintf("%.1f %.1f", wrk, veg) != "40.0 200.0" {
		t.Fatalf("got wrk %v µs, vegeta %v µs", wrk, veg)
	}
}

// TestCaddyConfig checks what the Caddy rows promise to be configured
// like the nginx rows: TLS 1.3 only with the bench's certificate, client
// certificates required and verified on the chain's inner hop, HTTP/1.1
// only (no HTTP/3 listener), a keep-alive pool of 256, the chain's outer
// hop presenting the client certificate and verifying the inner's name,
// no admin endpoint and no access logs.
func TestCaddyConfig(t *testing.T) {
	c := certFiles{CA: "/b/ca.crt", ServerCert: "/b/server.crt", ServerKey: "/b/server.key", ClientCert: "/b/client.crt", ClientKey: "/b/client.key"}
	inner, err := caddyConfig(c, "127.0.0.1:2", caddyTLSPolicy(c.CA), caddyProxy("127.0.0.1:1", "", nil))
	if err != nil {
		t.Fatal(err)
	}
	outer, err := caddyConfig(c, "127.0.0.1:3", nil, caddyProxy("127.0.0.1:2", innerName, map[string]any{
		"client_certificate_file": c.ClientCert, "server_name": innerName,
	}))
	if err != nil {
		t.Fatal(err)
	}
	var in, out map[string]any
	if err := json.Unmarshal(inner, &in); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(outer, &out); err != nil {
		t.Fatal(err)
	}
	get := func(v any, path ...any) any {
		for _, p := range path {
			switch k := p.(type) {
			case string:
				m, _ := v.(map[string]any)
				v = m[k]
			case int:
				s, _ := v.([]any)
				if k >= len(s) {
					return nil
				}
				v = s[k]
			}
		}
		return v
	}
	srv := func(doc map[string]any) any { return get(doc, "apps", "http", "servers", "bench") }
	handler := func(doc map[string]any) any { return get(srv(doc), "routes", 0, "handle", 0) }
	for _, tc := range []struct {
		what string
		got  any
		want string
	}{
		{"admin", get(in, "admin", "disabled"), "true"},
		{"persist", get(in, "admin", "config", "persist"), "false"},
		{"access logs", get(srv(in), "logs"), "<nil>"},
		{"protocols", get(srv(in), "protocols"), "[h1]"},
		{"automatic https", get(srv(in), "automatic_https", "disable"), "true"},
		{"tls min", get(srv(in), "tls_connection_policies", 0, "protocol_min"), "tls1.3"},
		{"tls max", get(srv(in), "tls_connection_policies", 0, "protocol_max"), "tls1.3"},
		{"client auth", get(srv(in), "tls_connection_policies", 0, "client_authentication", "mode"), "require_and_verify"},
		{"client CA", get(srv(in), "tls_connection_policies", 0, "client_authentication", "ca", "pem_files"), "[/b/ca.crt]"},
		{"certificate", get(in, "apps", "tls", "certificates", "load_files", 0, "certificate"), "/b/server.crt"},
		{"upstream", get(handler(in), "upstreams", 0, "dial"), "127.0.0.1:1"},
		{"versions", get(handler(in), "transport", "versions"), "[1.1]"},
		{"keep-alive", get(handler(in), "transport", "keep_alive", "max_idle_conns_per_host"), "256"},
		{"inner host", get(handler(in), "headers"), "<nil>"},
		{"outer plain", get(srv(out), "tls_connection_policies"), "<nil>"},
		{"outer client cert", get(handler(out), "transport", "tls", "client_certificate_file"), "/b/client.crt"},
		{"outer host", get(handler(out), "headers", "request", "set", "Host"), "[" + innerName + "]"},
	} {
		if s := fmt.Sprint(tc.got); s != tc.want {
			t.Errorf("%s: %s, want %s", tc.what, s, tc.want)
		}
	}
}

// TestRunShInstallsTheToolsVersions: run.sh installs the versions (and so
// the paths) the command looks for.
func TestRunShInstallsTheToolsVersions(t *testing.T) {
	b, err := os.ReadFile("run.sh")
	if err != nil {
		t.Fatal(err)
	}
	sh := string(b)
	for _, want := range []string{"CADDY_VERSION=" + caddyVersion, "VEGETA_VERSION=" + vegetaVersion,
		caddyModule + "/cmd/caddy@$CADDY_VERSION", vegetaModule + "@$VEGETA_VERSION"} {
		if !strings.Contains(sh, want) {
			t.Errorf("run.sh does not say %q", want)
		}
	}
	if got := caddyPath("c"); got != filepath.Join("c", "caddy-"+caddyVersion, "caddy") {
		t.Errorf("caddyPath = %s", got)
	}
}

func TestOldProxySpec(t *testing.T) {
	ctx := t.Context()
	if p, _, err := oldProxy(ctx, "", t.TempDir()); p != "" || err != nil {
		t.Errorf("empty: %q, %v; want no old binary", p, err)
	}
	bin := filepath.Join(t.TempDir(), "mesh-proxy")
	if err := os.WriteFile(bin, []byte("x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if p, desc, err := oldProxy(ctx, bin, t.TempDir()); p != bin || desc != bin || err != nil {
		t.Errorf("file: %q %q %v", p, desc, err)
	}
	// A directory is not a binary, and not a commit either.
	_, _, err := oldProxy(ctx, t.TempDir(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "-old-proxy") {
		t.Errorf("directory: %v, want an error naming -old-proxy", err)
	}
	if _, _, err := oldProxy(ctx, "no-such-commit-or-file", t.TempDir()); err == nil || !strings.Contains(err.Error(), "neither a file nor a commit") {
		t.Errorf("nonsense: %v", err)
	}
	// A commit already built is taken from the cache, not built again.
	cache := t.TempDir()
	sha := "49cff41b42ecebf32322a5f788ae0598e9304d81"
	if err := os.MkdirAll(filepath.Join(cache, "mesh-proxy-"+sha), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cache, "mesh-proxy-"+sha, "mesh-proxy"), []byte("x"), 0o700); err != nil {
		t.Fatal(err)
	}
	p, desc, err := oldProxy(ctx, startCommit, cache)
	if err != nil {
		t.Skipf("%s not in this clone's history: %v", startCommit, err)
	}
	if p != filepath.Join(cache, "mesh-proxy-"+sha, "mesh-proxy") || desc != "built from "+startCommit {
		t.Errorf("cached commit: %q %q", p, desc)
	}
}

// TestBarsLine: issue 22's bars are judged on the unrounded per-round
// medians (0.846 misses 0.85, though the ratio table prints 0.85×).
func TestBarsLine(t *testing.T) {
	rows := []*row{
		benchRow("nginx", "one hop", []float64{1000, 1000, 1000}, []int64{10, 10, 10}, []float64{10, 10, 10}),
		benchRow("mesh-proxy", "one hop", []float64{846, 900, 800}, []int64{10, 10, 10}, []float64{10, 10, 10}),
		benchRow("nginx → nginx", "two hops", []float64{100, 100, 100}, []int64{10, 10, 10}, []float64{10, 10, 10}),
		benchRow("mesh-proxy → mesh-proxy", "two hops", []float64{80, 79, 90}, []int64{10, 10, 10}, []float64{10, 10, 10}),
	}
	want := "issue 22 bars at 64 connections, per-round medians unrounded: one hop 0.846× nginx (bar 0.85×: missed); two hops 0.800× nginx → nginx (bar 0.80×: met)"
	if got := barsLine(rows, 64); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(ratioTable(rows, 64, 1), "| mesh-proxy / nginx | 0.85× (0.80–0.90)") {
		t.Fatalf("the table rounds: %s", ratioTable(rows, 64, 1))
	}
	if got := barsLine(rows[:2], 64); got != "" {
		t.Fatalf("without the two-hop rows: %q", got)
	}
}
