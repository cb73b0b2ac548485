package admin

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// serve sends one request through the server's guard as if it arrived on
// local from remote.
func serve(s *Server, method, host, local, remote string, hdr http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/probe", nil)
	req.Host, req.RemoteAddr = host, remote
	for k, v := range hdr {
		req.Header[k] = v
	}
	if local != "" {
		addr, err := net.ResolveTCPAddr("tcp", local)
		if err != nil {
			panic(err)
		}
		req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, addr))
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec
}

// Every admin endpoint checks Host against the server's own address: the
// pod IP and port (the kubelet's probes), or on loopback localhost and the
// loopback IPs; a DNS-rebinding name is refused, and counted.
func TestGuardHost(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := New(Config{Addr: "0.0.0.0:15000", Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("/probe", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	const pod, other = "10.1.2.3:15000", "10.9.9.9:5555"
	for _, c := range []struct {
		host, local string
		want        int
	}{
		{"10.1.2.3:15000", pod, 200},               // kubelet probe, Prometheus scrape
		{"10.1.2.3:80", pod, 421},                  // another port
		{"10.1.2.3", pod, 421},                     // port 80 implied
		{"evil.example:15000", pod, 421},           // DNS rebinding to the pod IP
		{"localhost:15000", pod, 421},              // localhost is not the pod IP
		{"10.1.2.4:15000", pod, 421},               // another pod's address
		{"", pod, 421},                             // HTTP/1.0 without Host
		{"127.0.0.1:8080", "127.0.0.1:15000", 200}, // kubectl port-forward: any port
		{"localhost:8080", "127.0.0.1:15000", 200},
		{"LOCALHOST.", "127.0.0.1:15000", 200},
		{"[::1]:8080", "[::1]:15000", 200},
		{"evil.example:8080", "127.0.0.1:15000", 421}, // DNS rebinding to 127.0.0.1
		{"10.1.2.3:15000", "127.0.0.1:15000", 421},
		{"[fd00::5]:15000", "[fd00::5]:15000", 200},
		{"[::ffff:10.1.2.3]:15000", pod, 200},
	} {
		rec := serve(s, http.MethodGet, c.host, c.local, other, nil)
		if rec.Code != c.want {
			t.Errorf("Host %q on %s: %d %q, want %d", c.host, c.local, rec.Code, rec.Body.String(), c.want)
		}
	}
	if n := counterValue(s.guard.refused.WithLabelValues(RefusedHost)); n != 8 {
		t.Errorf("minimesh_admin_refused_total{reason=host} = %v, want 8", n)
	}

	// Without a connection (embedding), the configured address decides.
	s2, err := New(Config{Addr: "127.0.0.1:15000", Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if rec := serve(s2, http.MethodGet, "localhost:15000", "", "127.0.0.1:1", nil); rec.Code != http.StatusNotFound {
		t.Errorf("localhost on a loopback admin: %d, want 404 (past the guard)", rec.Code)
	}
	if rec := serve(s2, http.MethodGet, "rebind.example:15000", "", "127.0.0.1:1", nil); rec.Code != http.StatusMisdirectedRequest {
		t.Errorf("a foreign name on a loopback admin: %d, want 421", rec.Code)
	}
}

// A request that may change state needs X-Mesh-Admin: 1, which a browser
// cannot send cross-site without a preflight; the preflight is refused.
func TestGuardStateChangingNeedsHeader(t *testing.T) {
	s, err := New(Config{Addr: "127.0.0.1:15000", Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	posted := 0
	s.Handle("POST /probe", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { posted++ }))
	const host, local, remote = "127.0.0.1:15000", "127.0.0.1:15000", "127.0.0.1:4444"
	for _, c := range []struct {
		method string
		hdr    http.Header
		want   int
	}{
		{http.MethodPost, nil, 403},
		{http.MethodPost, http.Header{"Content-Type": {"text/plain"}, "Origin": {"https://evil.example"}}, 403}, // a simple cross-site POST
		{http.MethodPost, http.Header{"X-Mesh-Admin": {"true"}}, 403},
		{http.MethodOptions, http.Header{"Origin": {"https://evil.example"}, "Access-Control-Request-Method": {"POST"}, "Access-Control-Request-Headers": {"x-mesh-admin"}}, 403},
		{http.MethodPost, http.Header{"X-Mesh-Admin": {"1"}}, 200},
	} {
		rec := serve(s, c.method, host, local, remote, c.hdr)
		if rec.Code != c.want {
			t.Errorf("%s %v: %d, want %d", c.method, c.hdr, rec.Code, c.want)
		}
		for k := range rec.Header() {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("%s %v: answered with %s", c.method, c.hdr, k)
			}
		}
	}
	if posted != 1 {
		t.Errorf("the handler ran %d times, want once", posted)
	}
	if n := counterValue(s.guard.refused.WithLabelValues(RefusedHeader)); n != 4 {
		t.Errorf("refused{reason=header} = %v, want 4", n)
	}
}

func TestLoopbackOnly(t *testing.T) {
	s, err := New(Config{Addr: "0.0.0.0:15000", Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("/probe", s.LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("secret")) })))
	if rec := serve(s, http.MethodGet, "10.1.2.3:15000", "10.1.2.3:15000", "10.1.2.9:3333", nil); rec.Code != http.StatusForbidden || strings.Contains(rec.Body.String(), "secret") {
		t.Errorf("from the pod network: %d %q, want 403", rec.Code, rec.Body.String())
	}
	if rec := serve(s, http.MethodGet, "127.0.0.1:15000", "127.0.0.1:15000", "127.0.0.1:3333", nil); rec.Code != http.StatusOK {
		t.Errorf("from loopback: %d, want 200", rec.Code)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
