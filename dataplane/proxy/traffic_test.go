package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/dataplane/balancer"
)

// protoApp answers with the protocol it was spoken to in and the mesh
// target header it saw (none, if the inbound does its job).
func protoApp(t testing.TB, h2c bool) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Proto, r.Header.Get(HeaderTarget))
	}))
	if h2c {
		s.Config.Protocols = new(http.Protocols)
		s.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func TestInboundTargets(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	h1, h2c := protoApp(t, false), protoApp(t, true)
	h1Port, h2cPort := portOfAddr(t, h1.Listener.Addr().String()), portOfAddr(t, h2c.Listener.Addr().String())
	tab, err := CompileTable(TableConfig{Service: "api"}, snapshot(t, fmt.Sprintf(`
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: a, port: %d, protocol: http}, {name: b, port: %d, protocol: http2}, {name: c, port: 7, protocol: tcp}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api"]
`, h1Port, h2cPort)))
	if err != nil {
		t.Fatal(err)
	}
	ln := listenLocal(t)
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: ln, App: h1.Listener.Addr().String(), SVID: m.api, Bundle: m.bundle, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	client := mtlsClient(t, m.web, m.bundle, apiID, true)
	do := func(target string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+ln.Addr().String()+"/", nil)
		if target != "" {
			req.Header.Set(HeaderTarget, target)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	type want struct {
		code int
		body string
	}
	check := func(cases map[string]want) {
		t.Helper()
		for target, w := range cases {
			code, body := do(target)
			if code != w.code || !strings.HasPrefix(body, w.body) {
				t.Errorf("target %q: %d %q, want %d %q", target, code, body, w.code, w.body)
			}
		}
	}
	h1T, h2cT := fmt.Sprintf("http/%d", h1Port), fmt.Sprintf("http2/%d", h2cPort)
	// Before any table: only the app's own port.
	check(map[string]want{
		"":   {200, "HTTP/1.1 "},
		h1T:  {200, "HTTP/1.1 "},
		h2cT: {http.StatusMisdirectedRequest, "port not served"},
	})
	in.SetTable(tab)
	check(map[string]want{
		"":                 {200, "HTTP/1.1 "},
		h1T:                {200, "HTTP/1.1 "},
		h2cT:               {200, "HTTP/2.0 "}, // h2c, prior knowledge
		"http/1":           {http.StatusMisdirectedRequest, "port not served"},
		"tcp/7":            {http.StatusMisdirectedRequest, "TCP port"}, // not a CONNECT
		"grpc/abc":         {http.StatusBadRequest, "bad " + HeaderTarget},
		"nonsense":         {http.StatusBadRequest, "bad " + HeaderTarget},
		fmt.Sprint(h1Port): {http.StatusBadRequest, "bad " + HeaderTarget},
	})
}

func portOfAddr(t testing.TB, addr string) uint32 {
	t.Helper()
	_, p, _ := net.SplitHostPort(addr)
	n, ok := parsePort(p)
	if !ok {
		t.Fatalf("no port in %q", addr)
	}
	return n
}

// Two endpoints of api, one that never answers: with a per-try timeout
// every request ends on the other, body and all.
func TestOutboundPerTryTimeoutRetriesWithBody(t *testing.T) {
	// Over the HTTP/1.1 pool (the default) a try given up closes its
	// connection; the inbound's HTTP/1.1 loop notices that within its
	// WatchAfter (1 s) and cancels the slow app's request (over HTTP/2 a
	// stream reset cancels it at once).
	checkLeaks(t)
	m := newMesh(t)
	var slowHits atomic.Int64
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowHits.Add(1)
		// Read the body first: net/http notices a closed connection (and
		// cancels the context) only once the body is consumed.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	defer slow.Close()
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, b)
	}))
	defer fast.Close()
	var eps []string
	for _, app := range []*httptest.Server{slow, fast} {
		ln := listenLocal(t)
		log, _ := newLogger()
		in, err := NewInbound(InboundConfig{Listener: ln, App: app.Listener.Addr().String(), SVID: m.api, Bundle: m.bundle, Logger: log,
			Limits: Limits{Drain: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		run(t, in)
		eps = append(eps, "default/api "+ln.Addr().String()+" "+apiID)
	}
	// No Service resource: each inbound sends to its own app.
	tab, err := CompileTable(TableConfig{}, snapshot(t, `
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: api}
spec:
  service: api
  backends: [{service: api}]
  retries: {attempts: 1, perTryTimeout: 1s, retryOn: [gateway-error], budget: {percent: 100, minRetriesPerSecond: 1000}}
`, eps...))
	if err != nil {
		t.Fatal(err)
	}
	outLn := listenLocal(t)
	metrics := newMetrics(t)
	log, _ := newLogger()
	// The slow endpoint is ejected after two timeouts, which keeps the
	// test short; until then each request that tries it first waits out
	// its try (1s, far above what a try to the fast one takes).
	out, err := NewOutbound(OutboundConfig{Upstreams: []Upstream{{Name: "api", Listener: outLn}}, SVID: m.web, Bundle: m.bundle,
		Logger: log, Metrics: metrics, Limits: Limits{Drain: time.Second}, Outlier: balancer.Config{ConsecutiveFailures: 2}})
	if err != nil {
		t.Fatal(err)
	}
	out.Install(tab)
	run(t, out)
	client := plainClient(t)
	// Each request picks either endpoint with even odds: that none of 20
	// tried the slow one first has odds 2^-20.
	for i := 0; i < 20; i++ {
		req, _ := http.NewRequest(http.MethodPut, "http://"+outLn.Addr().String()+"/", strings.NewReader(fmt.Sprint("body ", i)))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprint("PUT body ", i) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	var d dto.Metric
	if err := metrics.retries.WithLabelValues(ListenerOutbound).Write(&d); err != nil {
		t.Fatal(err)
	}
	if slowHits.Load() == 0 || d.GetCounter().GetValue() == 0 {
		t.Fatalf("slow endpoint tried %d times, %v retries counted", slowHits.Load(), d.GetCounter().GetValue())
	}
	// The table is swapped for one without endpoints: 503 at once.
	empty, err := CompileTable(TableConfig{}, snapshot(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	out.Install(empty)
	out.Install(empty) // a table is installed once; again is a no-op
	resp, err := client.Get("http://" + outLn.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "not a service of the mesh") {
		t.Fatalf("after the endpoints went: %d %q", resp.StatusCode, b)
	}
}

// Requests to one remote share one connection; when the remote goes away
// the next request dials a new one, without a restart of anything.
func TestOutboundReplacesFailedConnection(t *testing.T) {
	t.Setenv(EnvMeshLink, MeshLinkH2) // HTTP/2's one connection; HTTP/1.1's pool: h1link_test.go
	checkLeaks(t)
	m, a := newMesh(t), newApp(t)
	first := &countingListener{Listener: listenLocal(t)}
	addr := first.Addr().String()
	startIn := func(ln net.Listener) (stop func()) {
		log, _ := newLogger()
		in, err := NewInbound(InboundConfig{Listener: ln, App: a.addr(), SVID: m.api, Bundle: m.bundle, Logger: log,
			Limits: Limits{Drain: 50 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- in.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	stopFirst := startIn(first)
	outLn, _ := startOutbound(t, m, addr, apiID, newMetrics(t))
	client := plainClient(t)
	url := "http://" + outLn.Addr().String() + "/"
	getOK := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := getOK(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := first.accepted.Load(); n != 1 {
		t.Fatalf("30 concurrent requests took %d connections, want 1", n)
	}
	// The remote proxy goes away (its connections with it) and comes back
	// on the same address.
	stopFirst()
	var second *countingListener
	eventually(t, "listen again on "+addr, func() bool {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			second = &countingListener{Listener: ln}
		}
		return err == nil
	})
	defer startIn(second)()
	eventually(t, "a request through a new connection", func() bool { return getOK() == nil })
	for i := 0; i < 10; i++ {
		if err := getOK(); err != nil {
			t.Fatal(err)
		}
	}
	if n := second.accepted.Load(); n != 1 {
		t.Fatalf("the new remote accepted %d connections, want 1", n)
	}
}

// The circuit breaker answers 503 at once when a service has its maximum
// of requests in flight; the body limit answers 413 before anything is
// sent.
func TestOutboundCircuitBreakerAndBodyLimit(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	var hits atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			<-release
		}
	}))
	defer app.Close()
	inLn := listenLocal(t)
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: inLn, App: app.Listener.Addr().String(), SVID: m.api, Bundle: m.bundle, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	outLn := listenLocal(t)
	metrics := newMetrics(t)
	out, err := NewOutbound(OutboundConfig{
		Upstreams: []Upstream{{Name: "api", Listener: outLn, Remote: inLn.Addr().String(), ID: spiffeid.RequireFromString(apiID)}},
		SVID:      m.web, Bundle: m.bundle, Logger: log, Metrics: metrics,
		MaxRequestsPerService: 1, Limits: Limits{MaxRequestBodyBytes: 10, Drain: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, out)
	client := plainClient(t)
	url := "http://" + outLn.Addr().String()
	status := func(method, path, body string) int {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	held := make(chan int, 1)
	go func() { held <- status(http.MethodGet, "/hold", "") }()
	<-arrived
	if code := status(http.MethodGet, "/", ""); code != http.StatusServiceUnavailable {
		t.Errorf("second request while one is in flight: %d, want 503", code)
	}
	close(release)
	if code := <-held; code != 200 {
		t.Errorf("held request: %d", code)
	}
	if code := status(http.MethodGet, "/", ""); code != 200 {
		t.Errorf("after the first ended: %d", code)
	}
	var d dto.Metric
	_ = metrics.overflows.WithLabelValues(ListenerOutbound).Write(&d)
	if d.GetCounter().GetValue() != 1 {
		t.Errorf("overflows counted: %v, want 1", d.GetCounter().GetValue())
	}
	before := hits.Load()
	if code := status(http.MethodPost, "/", "eleven byte"); code != http.StatusRequestEntityTooLarge {
		t.Errorf("11-byte body over a 10-byte limit: %d, want 413", code)
	}
	if code := status(http.MethodPost, "/", "ten bytes!"); code != 200 {
		t.Errorf("10-byte body: %d", code)
	}
	if hits.Load() != before+1 {
		t.Errorf("the app got %d requests, want only the one within the limit", hits.Load()-before)
	}
}

// A Host outside the mesh is refused unless Egress names it; then it goes
// out in plain HTTP, without the mesh's headers.
func TestOutboundEgress(t *testing.T) {
	checkLeaks(t)
	m, a := newMesh(t), newApp(t)
	other := newApp(t)
	httpLn := listenLocal(t)
	log, _ := newLogger()
	out, err := NewOutbound(OutboundConfig{HTTPListener: httpLn, Egress: []string{"LOCALHOST", a.addr()},
		SVID: m.web, Bundle: m.bundle, Logger: log, Limits: Limits{Drain: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, out)
	client := plainClient(t)
	empty, err := CompileTable(TableConfig{}, snapshot(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	out.Install(empty)
	do := func(host string) (int, seen) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+httpLn.Addr().String()+"/out", nil)
		req.Host = host
		req.Header.Set("X-Mesh-Peer-Id", "spiffe://evil/x")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s seen
		if resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, s
	}
	code, s := do(a.addr())
	if code != 200 || s.Path != "/out" || s.Header.Get(HeaderPeerID) != "" || len(s.Header.Get(HeaderRequestID)) != 36 {
		t.Fatalf("allowed egress: %d %+v", code, s)
	}
	if code, _ := do(other.addr()); code != http.StatusBadGateway || other.hits.Load() != 0 {
		t.Fatalf("egress to a port not listed: %d, %d hits", code, other.hits.Load())
	}
	for _, bad := range [][]string{{"http://x"}, {"a b"}, {"host:99999"}, {""}} {
		if _, err := NewOutbound(OutboundConfig{Egress: bad, SVID: m.web, Bundle: m.bundle}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Egress %q: %v", bad, err)
		}
	}
}
