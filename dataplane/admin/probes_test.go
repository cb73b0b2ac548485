package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// probeApp is the app: a real HTTP server on loopback.
func probeApp(t *testing.T, h http.HandlerFunc) int {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return portOf(t, srv.URL)
}

func portOf(t *testing.T, raw string) int {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startProbes runs an admin server with the probe handler. The test
// checks for leaks itself (first thing, so after the apps are closed).
func startProbes(t *testing.T, probes AppProbes, maxConcurrent int) (string, *http.Client) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewProbeHandler(ProbeConfig{Probes: probes, MaxConcurrent: maxConcurrent})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("GET "+AppHealthPrefix, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return "http://" + ln.Addr().String(), &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return p
}

func TestAppProbesForwardToTheApp(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	var mu sync.Mutex
	var seen *http.Request
	app := probeApp(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Clone(r.Context())
		mu.Unlock()
		switch r.URL.Path {
		case "/healthz":
			_, _ = io.WriteString(w, "alive")
		case "/ready":
			http.Error(w, "warming up", http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case "/elsewhere":
			http.Redirect(w, r, "http://login.example.invalid/", http.StatusFound)
		case "/big":
			_, _ = io.WriteString(w, strings.Repeat("x", 64<<10))
		default:
			http.NotFound(w, r)
		}
	})
	tlsApp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "secure "+r.URL.Path)
	}))
	t.Cleanup(tlsApp.Close)
	tcpApp := probeApp(t, func(http.ResponseWriter, *http.Request) {})
	down := closedPort(t)

	probes := AppProbes{
		"/app-health/web/livez":        {HTTPGet: &HTTPGetProbe{Path: "/healthz", Port: app, HTTPHeaders: []HTTPHeader{{Name: "X-Probe", Value: "1"}, {Name: "Host", Value: "web.local"}}}},
		"/app-health/web/readyz":       {HTTPGet: &HTTPGetProbe{Path: "/ready", Port: app}},
		"/app-health/web/startupz":     {HTTPGet: &HTTPGetProbe{Path: "/moved", Port: app}},
		"/app-health/redirect/livez":   {HTTPGet: &HTTPGetProbe{Path: "/elsewhere", Port: app}},
		"/app-health/big/livez":        {HTTPGet: &HTTPGetProbe{Path: "/big", Port: app}},
		"/app-health/secure/livez":     {HTTPGet: &HTTPGetProbe{Path: "/s", Port: portOf(t, tlsApp.URL), Scheme: "HTTPS"}},
		"/app-health/tcp/livez":        {TCPSocket: &TCPSocketProbe{Port: tcpApp}},
		"/app-health/tcp-down/livez":   {TCPSocket: &TCPSocketProbe{Port: down}},
		"/app-health/http-down/readyz": {HTTPGet: &HTTPGetProbe{Path: "/", Port: down}},
	}
	base, c := startProbes(t, probes, 0)

	tests := []struct {
		path     string
		code     int
		body     string // substring
		location bool
	}{
		{"/app-health/web/livez", 200, "alive", false},
		{"/app-health/web/readyz", 503, "warming up", false},
		{"/app-health/web/startupz", 200, "alive", false}, // redirect within the app followed
		{"/app-health/redirect/livez", 302, "", false},    // a redirect away is a success, without Location
		{"/app-health/secure/livez", 200, "secure /s", false},
		{"/app-health/tcp/livez", 200, "ok", false},
		{"/app-health/tcp-down/livez", 503, "app probe failed", false},
		{"/app-health/http-down/readyz", 503, "app probe failed", false},
		{"/app-health/other/livez", 404, "no app probe", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, base+tt.path, nil)
			req.Header.Set("User-Agent", "kube-probe/1.33")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code || !strings.Contains(string(b), tt.body) {
				t.Fatalf("%s: %d %q, want %d containing %q", tt.path, resp.StatusCode, b, tt.code, tt.body)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("Location %q passed on: kubelet would follow it to the admin port", loc)
			}
		})
	}

	// What the app saw of the first probe: its path, the probe's headers
	// and Host, kubelet's User-Agent.
	code, _ := fetchUA(t, c, base+"/app-health/web/livez")
	if code != 200 {
		t.Fatal(code)
	}
	mu.Lock()
	got := seen
	mu.Unlock()
	if seen := got; seen.URL.Path != "/healthz" || seen.Header.Get("X-Probe") != "1" || seen.Host != "web.local" || seen.Header.Get("User-Agent") != "kube-probe/1.33" {
		t.Errorf("app saw %s %s host %q headers %v", seen.Method, seen.URL, seen.Host, seen.Header)
	}

	// At most 10 KiB of the app's answer is passed on.
	_, body := fetch(t, c, http.MethodGet, base+"/app-health/big/livez")
	if len(body) != maxProbeBody {
		t.Errorf("passed on %d bytes, want %d: %.100q", len(body), maxProbeBody, body)
	}
}

func fetchUA(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("User-Agent", "kube-probe/1.33")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A probe the app does not answer in time fails with 503, and probes
// beyond MaxConcurrent are refused at once rather than queued against the
// app.
func TestAppProbesTimeoutAndConcurrency(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	app := probeApp(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	probes := AppProbes{
		"/app-health/slow/livez":  {HTTPGet: &HTTPGetProbe{Path: "/", Port: app}, TimeoutSeconds: 1},
		"/app-health/held/readyz": {HTTPGet: &HTTPGetProbe{Path: "/", Port: app}, TimeoutSeconds: 60},
	}
	base, c := startProbes(t, probes, 1)

	code, body := fetch(t, c, http.MethodGet, base+"/app-health/slow/livez")
	<-entered
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "deadline") {
		t.Fatalf("slow probe: %d %q, want 503 for the timeout", code, body)
	}

	done := make(chan int, 1)
	go func() {
		code, _ := fetch(t, c, http.MethodGet, base+"/app-health/held/readyz")
		done <- code
	}()
	<-entered // the held probe is at the app and owns the only slot
	code, body = fetch(t, c, http.MethodGet, base+"/app-health/slow/livez")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "too many") {
		t.Errorf("second probe: %d %q, want 503 too many", code, body)
	}
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Errorf("held probe: %d", code)
	}
}

func TestParseAppProbes(t *testing.T) {
	tests := []struct {
		name, in, want string // want: substring of the error, "" for valid
	}{
		{"empty", ``, ""},
		{"http", `{"/app-health/app/livez":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP","httpHeaders":[{"name":"X-A","value":"b"}]},"timeoutSeconds":3}}`, ""},
		{"tcp", `{"/app-health/app-2/readyz":{"tcpSocket":{"port":8080}}}`, ""},
		{"unknown field", `{"/app-health/app/livez":{"httpGet":{"port":8080,"host":"evil"}}}`, "unknown field"},
		{"trailing data", `{} {}`, "after the JSON"},
		{"not json", `nope`, "invalid character"},
		{"bad path", `{"/healthz":{"tcpSocket":{"port":1}}}`, "/app-health/<container>"},
		{"bad kind", `{"/app-health/app/alive":{"tcpSocket":{"port":1}}}`, "/app-health/<container>"},
		{"upper container", `{"/app-health/App/livez":{"tcpSocket":{"port":1}}}`, "/app-health/<container>"},
		{"neither", `{"/app-health/app/livez":{}}`, "exactly one"},
		{"both", `{"/app-health/app/livez":{"httpGet":{"port":1},"tcpSocket":{"port":1}}}`, "exactly one"},
		{"port 0", `{"/app-health/app/livez":{"httpGet":{"port":0}}}`, "not a TCP port"},
		{"port big", `{"/app-health/app/livez":{"tcpSocket":{"port":65536}}}`, "not a TCP port"},
		{"scheme", `{"/app-health/app/livez":{"httpGet":{"port":1,"scheme":"ftp"}}}`, "scheme"},
		{"relative path", `{"/app-health/app/livez":{"httpGet":{"port":1,"path":"healthz"}}}`, "must start with /"},
		{"path with newline", `{"/app-health/app/livez":{"httpGet":{"port":1,"path":"/a\nb"}}}`, "control"},
		{"header injection", `{"/app-health/app/livez":{"httpGet":{"port":1,"httpHeaders":[{"name":"X","value":"a\r\nEvil: 1"}]}}}`, "not a valid header"},
		{"bad header name", `{"/app-health/app/livez":{"httpGet":{"port":1,"httpHeaders":[{"name":"X Y","value":"a"}]}}}`, "not a valid header"},
		{"timeout", `{"/app-health/app/livez":{"tcpSocket":{"port":1},"timeoutSeconds":61}}`, "timeoutSeconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAppProbes(tt.in)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseAppProbes = %v, want an error containing %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("%v does not wrap ErrInvalidConfig", err)
			}
		})
	}
	if _, err := NewProbeHandler(ProbeConfig{Probes: AppProbes{"/x": {}}}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewProbeHandler with a bad probe: %v", err)
	}
}

func FuzzParseAppProbes(f *testing.F) {
	f.Add(`{"/app-health/app/livez":{"httpGet":{"path":"/healthz","port":8080}}}`)
	f.Add(`{"/app-health/a/readyz":{"tcpSocket":{"port":1},"timeoutSeconds":60}}`)
	f.Add(`{"/app-health/a/startupz":{"httpGet":{"port":443,"scheme":"HTTPS","httpHeaders":[{"name":"Host","value":"x"}]}}}`)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseAppProbes(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("%q: %v does not wrap ErrInvalidConfig", s, err)
			}
			return
		}
		// What is accepted survives a round trip and builds a handler.
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseAppProbes(string(b)); err != nil && len(p) > 0 {
			t.Fatalf("%q re-encoded as %s: %v", s, b, err)
		}
		if _, err := NewProbeHandler(ProbeConfig{Probes: p}); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
	})
}
