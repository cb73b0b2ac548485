package observability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
)

// scrapeFor is how long Prometheus scrapes the mesh under traffic.
const scrapeFor = 25 * time.Second

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serve runs h on a new loopback listener until the test ends.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	l := listen(t)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

type meshProxy struct {
	admin, inbound string
	upstream       string // web's listener for api
}

// startProxy runs a sidecar of service sa in front of app, calling api at
// apiInbound when given.
func startProxy(t *testing.T, m *controlplanetest.Meshd, sa, app, apiInbound string) meshProxy {
	t.Helper()
	tok := m.Token(t, "default", sa, 1)
	inL, adminL := listen(t), listen(t)
	p := meshProxy{admin: adminL.Addr().String(), inbound: inL.Addr().String()}
	cfg := sidecar.Config{ControlPlane: m.Addr, Token: tok.Secret, CAPin: tok.CaPin, Service: sa, Namespace: "default", App: app,
		StateDir: filepath.Join(t.TempDir(), "state"), InboundListener: inL, AdminListener: adminL, AgentBackoffMax: time.Second,
		Version: "test", Registry: prometheus.NewRegistry()}
	if apiInbound != "" {
		l := listen(t)
		p.upstream = l.Addr().String()
		cfg.Upstreams = []proxy.Upstream{{Name: "api", Listener: l, Listen: p.upstream, Remote: apiInbound,
			ID: spiffeid.RequireFromString("spiffe://minimesh.local/ns/default/sa/api")}}
	}
	sc, err := sidecar.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s proxy: %v", sa, err)
		}
	})
	waitHTTP(t, "http://"+p.admin+"/ready", 20*time.Second)
	return p
}

func waitHTTP(t *testing.T, u string, within time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v", u, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fetch(t *testing.T, u string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
	}
	return b
}

// query runs an instant query through Prometheus's HTTP API and returns
// the number of series in its result; a query that does not parse or
// evaluate fails the test.
func query(t *testing.T, prom, q string) int {
	t.Helper()
	body := fetchStatus(t, "http://"+prom+"/api/v1/query?query="+url.QueryEscape(q))
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("query %s: %v: %s", q, err, body)
	}
	if r.Status != "success" {
		t.Errorf("query %s: %s %s", q, r.Status, r.Error)
	}
	return len(r.Data.Result)
}

// fetchStatus is fetch that keeps 4xx bodies (Prometheus's errors).
func fetchStatus(t *testing.T, u string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return b
}

// A demo-like mesh (meshd, web → api through two sidecars, real mTLS)
// under traffic, scraped by Debian's prometheus: every binary's /metrics
// passes promtool check metrics; Prometheus loads the alerts and
// evaluates them without error; every alert expression and dashboard
// query parses and evaluates through the HTTP API, and the request-rate,
// success-rate and p99 panels return data.
func TestPrometheusScrapesMesh(t *testing.T) {
	promtool, prometheusBin := tool(t, "promtool"), tool(t, "prometheus")
	m := controlplanetest.Start(t, controlplane.Config{})
	meshdMetrics := serve(t, promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))

	app := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/fail") {
			http.Error(w, "failing as asked", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "hello")
	}))
	api := startProxy(t, m, "api", app, "")
	web := startProxy(t, m, "web", app, api.inbound)

	// Traffic through web's proxy to api, one in ten failing, until the
	// scrape ends.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sent, failed int
	wg.Go(func() {
		c := &http.Client{Timeout: 5 * time.Second}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			path := "/hello"
			if i%10 == 9 {
				path = "/fail"
			}
			resp, err := c.Get("http://" + web.upstream + path)
			if err != nil {
				failed++
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			sent++
		}
	})
	defer func() { stop(); wg.Wait() }()

	// promtool check metrics on each binary's /metrics (meshd's registry
	// as cmd/meshd serves it, mesh-proxy's admin port).
	for name, u := range map[string]string{"meshd": "http://" + meshdMetrics + "/metrics", "web proxy": "http://" + web.admin + "/metrics", "api proxy": "http://" + api.admin + "/metrics"} {
		body := fetch(t, u)
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(string(body))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on %s's /metrics: %v\n%s", name, err, out)
		}
		for _, want := range []string{"_build_info{"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("%s's /metrics has no %s", name, want)
			}
		}
	}

	dir := t.TempDir()
	rulesFile(t, dir)
	pl := listen(t)
	promAddr := pl.Addr().String()
	pl.Close()
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yaml]
scrape_configs:
- job_name: meshd
  static_configs:
  - targets: [%q]
    labels: {namespace: minimesh-system, pod: meshd-0}
- job_name: mesh-proxy
  static_configs:
  - targets: [%q]
    labels: {namespace: default, pod: web-1}
  - targets: [%q]
    labels: {namespace: default, pod: api-1}
`, meshdMetrics, web.admin, api.admin)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	pctx, pcancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(pctx, prometheusBin, "--config.file=prometheus.yml", "--storage.tsdb.path=data",
		"--web.listen-address="+promAddr, "--log.level=warn")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		pcancel()
		_ = cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", log)
		}
	}()
	waitHTTP(t, "http://"+promAddr+"/-/ready", 30*time.Second)
	time.Sleep(scrapeFor)

	// Every target up.
	if n := query(t, promAddr, `up == 1`); n != 3 {
		t.Errorf("targets up: %d, want 3", n)
	}
	// Prometheus itself evaluates every rule without error.
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.Unmarshal(fetch(t, "http://"+promAddr+"/api/v1/rules"), &rules); err != nil {
		t.Fatal(err)
	}
	evaluated := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			evaluated++
			if r.Health != "ok" {
				t.Errorf("rule %s: health %q: %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if evaluated == 0 {
		t.Error("Prometheus loaded no rules")
	}
	for _, g := range prometheusRule(t).Spec.Groups {
		for _, r := range g.Rules {
			query(t, promAddr, r.Expr.String())
		}
	}
	// No alert fires on a healthy mesh (MeshdDown's
	// absent() would, were meshd's job missing).
	if n := query(t, promAddr, `ALERTS{alertstate="firing"}`); n != 0 {
		t.Errorf("%d alerts firing on a healthy mesh", n)
	}

	d := loadDashboard(t)
	mustHaveData := map[string]bool{}
	for _, p := range d.Panels {
		title := strings.ToLower(p.Title)
		if strings.Contains(title, "request rate") || strings.Contains(title, "success rate") || strings.Contains(title, "p99 latency") {
			mustHaveData[p.Title] = true
		}
	}
	if len(mustHaveData) != 6 {
		t.Errorf("request-rate, success-rate and p99 panels found: %v, want 6 (per service and per edge)", mustHaveData)
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			q := strings.ReplaceAll(tg.Expr, "$__rate_interval", "10s")
			n := query(t, promAddr, q)
			if mustHaveData[p.Title] && n == 0 {
				t.Errorf("panel %q: %s returned no data", p.Title, q)
			}
		}
	}
	// The success rate reflects the one-in-ten failures: 0.9 within a
	// wide margin (the 10 s window holds about 200 requests).
	body := fetchStatus(t, "http://"+promAddr+"/api/v1/query?query="+url.QueryEscape(
		`sum(rate(minimesh_proxy_outbound_requests_total{class="2xx"}[20s])) / sum(rate(minimesh_proxy_outbound_requests_total[20s]))`))
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || len(r.Data.Result) != 1 {
		t.Fatalf("edge success rate: %v %s", err, body)
	}
	var ratio float64
	fmt.Sscan(r.Data.Result[0].Value[1].(string), &ratio)
	if ratio < 0.8 || ratio > 0.97 {
		t.Errorf("edge success rate %v, want about 0.9 (one request in ten fails)", ratio)
	}
	stop()
	wg.Wait()
	if sent == 0 || failed > sent/10 {
		t.Errorf("traffic: %d answered, %d transport errors", sent, failed)
	}
}
