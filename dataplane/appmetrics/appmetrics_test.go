package appmetrics

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"minimesh/dataplane/admin"
	meshv1 "minimesh/proto/mesh/v1"
)

// app serves h on 127.0.0.1 and returns its port.
func app(t *testing.T, h http.HandlerFunc) uint32 {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	return uint32(n)
}

// proxy is the proxy's registry (one counter of ours, and the build info
// name an app might also use) and an admin server serving the Merger.
func proxy(t *testing.T, cfg Config) (*Merger, *admin.Server) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_proxy_requests_total", Help: "ours"})
	c.Add(7)
	reg.MustRegister(c)
	cfg.Ours = reg
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	adm, err := admin.New(admin.Config{Addr: "127.0.0.1:0", Registry: reg, Gatherer: m})
	if err != nil {
		t.Fatal(err)
	}
	return m, adm
}

func scrape(t *testing.T, adm *admin.Server) string {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://127.0.0.1:15000/metrics", nil)
	adm.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func has(t *testing.T, body string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("/metrics lacks %q\n%s", l, body)
		}
	}
}

func TestMergesPrometheus(t *testing.T) {
	port := app(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stats/prom" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Header().Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		defer gz.Close()
		io.WriteString(gz, `# HELP minimesh_proxy_requests_total the app's own counter, same name as ours
# TYPE minimesh_proxy_requests_total counter
minimesh_proxy_requests_total 3
# TYPE jobs_done_total counter
jobs_done_total{source="queue",kind="a"} 5
jobs_done_total{source="queue",kind="a"} 6
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="+Inf"} 2
latency_seconds_sum 0.3
latency_seconds_count 2
`)
	})
	m, adm := proxy(t, Config{})
	m.Set(&Target{Port: port, Path: "/stats/prom"})
	body := scrape(t, adm)
	has(t, body,
		"minimesh_proxy_requests_total 7",
		`app_minimesh_proxy_requests_total{source="app"} 3`,
		`jobs_done_total{exported_source="queue",kind="a",source="app"} 5`,
		`latency_seconds_bucket{source="app",le="0.1"} 1`,
		`latency_seconds_count{source="app"} 2`,
		"minimesh_proxy_app_metrics_up 1",
	)
	if strings.Count(body, "jobs_done_total{") != 1 {
		t.Errorf("the repeated series is served twice:\n%s", body)
	}
	// Off: only ours, no app_metrics families.
	m.Set(nil)
	body = scrape(t, adm)
	if strings.Contains(body, "source=\"app\"") || strings.Contains(body, "app_metrics_up") {
		t.Errorf("merging after Set(nil):\n%s", body)
	}
}

func TestBrokenAppNeverBreaksMetrics(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	cases := []struct {
		reason string
		h      http.HandlerFunc
		cfg    Config
	}{
		{ReasonStatus, func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", 500) }, Config{}},
		{ReasonParse, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "this is { not metrics\n") }, Config{}},
		{ReasonTooLarge, func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "# "+strings.Repeat("x", 2000)+"\nok 1\n")
		}, Config{MaxBytes: 1000}},
		{ReasonTooMany, func(w http.ResponseWriter, _ *http.Request) {
			for i := range 20 {
				fmt.Fprintf(w, "s{i=\"%d\"} 1\n", i)
			}
		}, Config{MaxSeries: 10}},
		{ReasonTimeout, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}, Config{Timeout: 200 * time.Millisecond}},
		{ReasonTimeout, func(w http.ResponseWriter, r *http.Request) {
			// Headers, then a body that never ends.
			w.WriteHeader(200)
			io.WriteString(w, "a 1\n")
			w.(http.Flusher).Flush()
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		}, Config{Timeout: 200 * time.Millisecond}},
		{ReasonStatus, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://example.com/", http.StatusFound)
		}, Config{}},
	}
	for _, tc := range cases {
		t.Run(tc.reason, func(t *testing.T) {
			port := app(t, tc.h)
			m, adm := proxy(t, tc.cfg)
			m.Set(&Target{Port: port})
			body := scrape(t, adm)
			has(t, body, "minimesh_proxy_requests_total 7", "minimesh_proxy_app_metrics_up 0",
				`minimesh_proxy_app_metrics_scrape_errors_total{reason="`+tc.reason+`"} 1`)
			if strings.Contains(body, `source="app"`) {
				t.Errorf("app series served from a failed fetch:\n%s", body)
			}
		})
	}
	t.Run(ReasonConnect, func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		m, adm := proxy(t, Config{})
		m.Set(&Target{Port: uint32(port)})
		has(t, scrape(t, adm), "minimesh_proxy_requests_total 7", `minimesh_proxy_app_metrics_scrape_errors_total{reason="connect"} 1`)
	})
}

func TestJSONMappings(t *testing.T) {
	port := app(t, func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, `{"conns":{"active":12,"total":3400},"ok":true,"name":"x"}`)
	})
	m, adm := proxy(t, Config{})
	m.Set(FromService(&meshv1.ServiceMetrics{Port: port, Path: "/stats", Format: meshv1.MetricsFormat_METRICS_FORMAT_JSON,
		Json: []*meshv1.JSONMetric{
			{Field: "conns.active", Name: "active_connections", Type: meshv1.MetricType_METRIC_TYPE_GAUGE},
			{Field: "conns.total", Name: "connections", Type: meshv1.MetricType_METRIC_TYPE_COUNTER, Help: "All connections."},
			{Field: "ok", Name: "ok", Type: meshv1.MetricType_METRIC_TYPE_GAUGE},
			{Field: "name", Name: "name", Type: meshv1.MetricType_METRIC_TYPE_GAUGE},
			{Field: "conns.missing", Name: "missing", Type: meshv1.MetricType_METRIC_TYPE_GAUGE},
		}}))
	body := scrape(t, adm)
	has(t, body,
		`app_active_connections{source="app"} 12`,
		`app_connections{source="app"} 3400`,
		"# HELP app_connections All connections.",
		"# TYPE app_connections counter",
		`app_ok{source="app"} 1`,
		`minimesh_proxy_app_metrics_scrape_errors_total{reason="json_field"} 2`,
		"minimesh_proxy_app_metrics_up 1",
	)
}

func TestParseFlag(t *testing.T) {
	for in, want := range map[string]string{"9090": "http://127.0.0.1:9090/metrics", "8080/stats/prom": "http://127.0.0.1:8080/stats/prom",
		"8080/m?format=prometheus": "http://127.0.0.1:8080/m?format=prometheus"} {
		tg, err := ParseFlag(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := tg.url("127.0.0.1"); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"0", "65536", "x", "80//evil", "80/a b", "-1"} {
		if _, err := ParseFlag(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestConcurrentScrapesShareOneFetch: the app sees one request for many
// simultaneous /metrics.
func TestConcurrentScrapesShareOneFetch(t *testing.T) {
	var n atomic.Int32
	release := make(chan struct{})
	port := app(t, func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		<-release
		io.WriteString(w, "a 1\n")
	})
	m, _ := proxy(t, Config{})
	m.Set(&Target{Port: port})
	h := promhttp.HandlerFor(m, promhttp.HandlerOpts{})
	done := make(chan string, 4)
	for range 4 {
		go func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			done <- rec.Body.String()
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	for range 4 {
		if b := <-done; !bytes.Contains([]byte(b), []byte(`a{source="app"} 1`)) {
			t.Errorf("scrape without the app's series:\n%s", b)
		}
	}
	if n := n.Load(); n > 2 {
		t.Errorf("the app was fetched %d times for 4 simultaneous scrapes", n)
	}
}
