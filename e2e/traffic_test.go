package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"minimesh/api"
	"minimesh/certs/certstest"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/balancer"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
	meshv1 "minimesh/proto/mesh/v1"
)

// applyDocs applies YAML resources through meshd's admin API and returns
// the revision.
func applyDocs(t *testing.T, m *controlplanetest.Meshd, doc string) uint64 {
	t.Helper()
	docs, err := api.Decode("traffic.yaml", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	req := &meshv1.ApplyRequest{}
	for _, d := range docs {
		req.Resources = append(req.Resources, api.ToProto(d.Object))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := m.Operator(t).Apply(ctx, req)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return resp.Revision
}

// echoApp is a real HTTP app on loopback that answers with what it
// received, or with the status it is told to fail with.
type echoApp struct {
	name string
	addr string
	port uint32
	fail atomic.Int32 // 0: answer 200
	hits atomic.Int64
}

// echoed is what an echoApp saw.
type echoed struct {
	App         string `json:"app"`
	Path        string `json:"path"`
	Host        string `json:"host"`
	Proto       string `json:"proto"`
	PeerID      string `json:"peer_id"`
	RequestID   string `json:"request_id"`
	Traceparent string `json:"traceparent"`
	Target      string `json:"target"`
	Spoof       string `json:"spoof"`
	Forwarded   string `json:"forwarded"`
}

func startEcho(t *testing.T, name string) *echoApp { return startEchoOn(t, name, "127.0.0.1:0") }

// startEchoOn starts an echoApp on addr. Replicas of one service listen
// on one port, as pods do, each on its own loopback address
// (127.0.0.2:P, 127.0.0.3:P): a Service's port is its apps' port.
func startEchoOn(t *testing.T, name, addr string) *echoApp {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	a := &echoApp{name: name, addr: l.Addr().String(), port: portOf(t, l.Addr().String())}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.hits.Add(1)
			if strings.HasPrefix(r.URL.Path, "/slow") {
				<-r.Context().Done() // answers only when the caller gives up
				return
			}
			if code := a.fail.Load(); code != 0 {
				http.Error(w, a.name+" fails", int(code))
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(echoed{
				App: a.name, Path: r.URL.Path, Host: r.Host, Proto: r.Proto,
				PeerID: r.Header.Get(proxy.HeaderPeerID), RequestID: r.Header.Get("X-Request-Id"),
				Traceparent: r.Header.Get("Traceparent"), Target: r.Header.Get(proxy.HeaderTarget),
				Spoof: r.Header.Get("X-Mesh-Spoof"), Forwarded: r.Header.Get("X-Forwarded-For"),
			})
		}),
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return a
}

func portOf(t *testing.T, addr string) uint32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(n)
}

// trafficProxy is a mesh-proxy as the traffic tests need it: its own
// service account, upstream ports by service, the Host-routed port.
type trafficProxy struct {
	*sidecar.Sidecar
	admin    string
	httpPort string            // the Host-routed outbound port
	up       map[string]string // upstream name -> local address
	cancel   context.CancelFunc
	done     chan error
}

type trafficOpts struct {
	service string
	sa      string // default service
	app     string
	// upstreams are flag names: "api", "api.default", "api:5432".
	upstreams []string
	httpPort  bool
	outlier   balancer.Config
}

func startTraffic(t *testing.T, m *controlplanetest.Meshd, o trafficOpts) *trafficProxy {
	t.Helper()
	if o.sa == "" {
		o.sa = o.service
	}
	tok := m.Token(t, "default", o.sa, 1)
	inL, adminL := listen(t), listen(t)
	h := &trafficProxy{admin: adminL.Addr().String(), up: map[string]string{}}
	cfg := sidecar.Config{
		ControlPlane: m.Addr, Token: tok.Secret, CAPin: tok.CaPin,
		Service: o.service, ServiceAccount: o.sa, App: o.app, StateDir: t.TempDir(),
		InboundListener: inL, AdminListener: adminL,
		Logger: logger(), AgentBackoffMax: time.Second, Version: "test",
		Registry: prometheus.NewRegistry(), Outlier: o.outlier,
	}
	for _, name := range o.upstreams {
		l := listen(t)
		u, err := proxy.ParseUpstream(name + "=" + l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		u.Listener = l
		h.up[name] = l.Addr().String()
		cfg.Upstreams = append(cfg.Upstreams, u)
	}
	if o.httpPort {
		l := listen(t)
		h.httpPort, cfg.OutboundHTTPListener = l.Addr().String(), l
	}
	h.Sidecar, h.cancel, h.done = runSidecar(t, o.sa, cfg)
	waitAdminReady(t, o.sa, h.admin)
	return h
}

// waitSnapshot waits until the proxy has applied a snapshot that cond
// accepts.
func (h *trafficProxy) waitSnapshot(t *testing.T, what string, cond func(*meshv1.Snapshot) error) {
	t.Helper()
	eventually(t, 15*time.Second, what, func() error {
		s := h.Agent.Applied()
		if s == nil {
			return errors.New("no snapshot yet")
		}
		return cond(s)
	})
}

// endpointsOf is a waitSnapshot condition: n endpoints for service.
func endpointsOf(service string, n int) func(*meshv1.Snapshot) error {
	return func(s *meshv1.Snapshot) error {
		got := 0
		for _, e := range s.GetEndpoints() {
			if e.GetService() == service {
				got++
			}
		}
		if got != n {
			return fmt.Errorf("%d endpoints of %s, want %d", got, service, n)
		}
		return nil
	}
}

// hasResource is a waitSnapshot condition: a resource of kind and name
// at the revision applyYAML returned, or later.
func hasResource(kind, name string, rev uint64) func(*meshv1.Snapshot) error {
	return func(s *meshv1.Snapshot) error {
		for _, r := range s.GetResources() {
			if r.GetKind() == kind && r.GetName() == name && r.GetRevision() >= rev {
				return nil
			}
		}
		return fmt.Errorf("no %s %q at revision %d", kind, name, rev)
	}
}

// plainHTTP is a client for the app's side of the proxy; its idle
// connections are closed at cleanup.
func plainHTTP(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// call sends a GET with a Host and headers and returns the status, the
// body and what the app echoed (for 200).
func call(t *testing.T, c *http.Client, addr, host, path string, hdr http.Header) (int, string, echoed) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %s): %v", path, host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var e echoed
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
	}
	return resp.StatusCode, string(b), e
}

func serviceYAML(name string, ports string, identities ...string) string {
	return fmt.Sprintf(`
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: %s}
spec:
  ports: [%s]
  servingIdentities: ["%s"]
---`, name, ports, strings.Join(identities, `", "`))
}

func httpPortYAML(port uint32) string {
	return fmt.Sprintf("{name: http, port: %d, protocol: http}", port)
}

func TestRoutingByLocalPortAndHost(t *testing.T) {
	meshd := controlplanetest.Start(t, controlplane.Config{})
	apiApp, webApp := startEcho(t, "api"), startEcho(t, "web")
	api := startTraffic(t, meshd, trafficOpts{service: "api", app: apiApp.addr})
	web := startTraffic(t, meshd, trafficOpts{service: "web", app: webApp.addr, upstreams: []string{"api"}, httpPort: true})
	client := plainHTTP(t)
	_ = api

	// Without a Service resource, api's endpoint is the proxy whose
	// identity's service account is api, and requests go to its app.
	web.waitSnapshot(t, "api's endpoint", endpointsOf("api", 1))
	code, body, e := call(t, client, web.up["api"], "", "/no-service-resource", nil)
	if code != 200 || e.App != "api" || e.PeerID != idOf("web").String() || e.Target != "" {
		t.Fatalf("before resources: %d %s %+v", code, body, e)
	}

	rev := applyDocs(t, meshd, serviceYAML("api", httpPortYAML(apiApp.port), idOf("api").String())+
		serviceYAML("web", httpPortYAML(webApp.port), idOf("web").String())+
		serviceYAML("lonely", httpPortYAML(9), idOf("lonely").String()))
	web.waitSnapshot(t, "Service api", hasResource("Service", "api", rev))

	// By the local port of the upstream.
	code, body, e = call(t, client, web.up["api"], "", "/by-port", nil)
	if code != 200 || e.App != "api" || e.Path != "/by-port" || e.PeerID != idOf("web").String() {
		t.Fatalf("by local port: %d %s %+v", code, body, e)
	}
	// By Host, in every form, with and without the port.
	for _, host := range []string{"api", "api.default", "api.default.svc", "API.Default.Svc",
		"api:" + strconv.Itoa(int(apiApp.port)), "api.default.svc.cluster.local", "api.default.svc."} {
		code, body, e := call(t, client, web.httpPort, host, "/by-host", nil)
		if code != 200 || e.App != "api" || e.Host != host || e.PeerID != idOf("web").String() {
			t.Errorf("Host %s: %d %s %+v", host, code, body, e)
		}
	}
	// The mesh's headers are the proxies' own: X-Mesh-* from the app is
	// dropped, X-Mesh-Target never reaches the app. A valid x-request-id
	// and a traceparent are passed on; an invalid one is replaced.
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	_, _, e = call(t, client, web.httpPort, "api", "/headers", http.Header{
		"X-Mesh-Peer-Id": {"spiffe://evil/x"}, "X-Mesh-Spoof": {"1"}, "X-Mesh-Target": {"tcp/22"},
		"X-Request-Id": {"req-42.abc"}, "Traceparent": {tp}, "X-Forwarded-For": {"192.0.2.1"},
	})
	// X-Forwarded-For: the app's own, passed as sent between two proxies.
	if e.PeerID != idOf("web").String() || e.Spoof != "" || e.Target != "" || e.RequestID != "req-42.abc" || e.Traceparent != tp ||
		e.Forwarded != "192.0.2.1" {
		t.Errorf("headers: %+v", e)
	}
	_, _, e = call(t, client, web.httpPort, "api", "/headers", http.Header{"X-Request-Id": {"bad id\twith spaces"}})
	if len(e.RequestID) != 36 || strings.Contains(e.RequestID, " ") {
		t.Errorf("invalid x-request-id kept or not replaced: %q", e.RequestID)
	}
	_, _, e1 := call(t, client, web.httpPort, "api", "/headers", nil)
	_, _, e2 := call(t, client, web.httpPort, "api", "/headers", nil)
	if len(e1.RequestID) != 36 || e1.RequestID == e2.RequestID {
		t.Errorf("generated x-request-ids %q, %q", e1.RequestID, e2.RequestID)
	}

	// Outside the mesh: a clear 502, and nothing sent anywhere.
	hits := apiApp.hits.Load() + webApp.hits.Load()
	for _, host := range []string{"example.com", "api.other", "10.0.0.1:80", "api.default.svc.example.com"} {
		code, body, _ := call(t, client, web.httpPort, host, "/", nil)
		if code != http.StatusBadGateway || !strings.Contains(body, "not a service of the mesh") {
			t.Errorf("Host %s: %d %q, want 502 naming the reason", host, code, body)
		}
	}
	// A service of the mesh without endpoints: 503.
	code, body, _ = call(t, client, web.httpPort, "lonely", "/", nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "lonely") {
		t.Errorf("lonely: %d %q, want 503", code, body)
	}
	if n := apiApp.hits.Load() + webApp.hits.Load(); n != hits {
		t.Errorf("refused requests reached an app (%d hits)", n-hits)
	}
}

// keepAliveConn is one HTTP/1.1 connection from the app to its proxy,
// used by hand so the test knows every request rides it.
type keepAliveConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAliveConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAliveConn{c: c, r: bufio.NewReader(c)}
}

// get sends a GET on the connection and returns the status and echo.
func (k *keepAliveConn) get(t *testing.T, path string, hdr http.Header) (int, echoed) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://api"+path, nil)
	for key, v := range hdr {
		req.Header[key] = v
	}
	_ = k.c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := req.Write(k.c); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(k.r, req)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.Close {
		t.Fatalf("the proxy closed the app's connection (status %d: %s)", resp.StatusCode, b)
	}
	var e echoed
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
	}
	return resp.StatusCode, e
}

// replicas starts n echo apps for one service on one port, each on its
// own loopback address.
func replicas(t *testing.T, names ...string) []*echoApp {
	t.Helper()
	apps := []*echoApp{startEchoOn(t, names[0], "127.0.0.2:0")}
	for i, n := range names[1:] {
		apps = append(apps, startEchoOn(t, n, fmt.Sprintf("127.0.0.%d:%d", i+3, apps[0].port)))
	}
	return apps
}

// Two deployments of api (service accounts api-v1 and api-v2) are the
// subsets v1 and v2 of Service api.
func startSubsets(t *testing.T) (*controlplanetest.Meshd, *trafficProxy, uint32) {
	t.Helper()
	meshd := controlplanetest.Start(t, controlplane.Config{})
	apps := replicas(t, "v1", "v2")
	webApp := startEcho(t, "web")
	applyDocs(t, meshd, fmt.Sprintf(`
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: %d, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api-*"]
  subsets:
  - {name: v1, identities: ["spiffe://minimesh.local/ns/default/sa/api-v1"]}
  - {name: v2, identities: ["spiffe://minimesh.local/ns/default/sa/api-v2"]}
---
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{name: http, port: %d, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/web"]
`, apps[0].port, webApp.port))
	startTraffic(t, meshd, trafficOpts{service: "api", sa: "api-v1", app: apps[0].addr})
	startTraffic(t, meshd, trafficOpts{service: "api", sa: "api-v2", app: apps[1].addr})
	web := startTraffic(t, meshd, trafficOpts{service: "web", app: webApp.addr, upstreams: []string{"api"}, httpPort: true})
	web.waitSnapshot(t, "both api endpoints", endpointsOf("api", 2))
	return meshd, web, apps[0].port
}

// routeYAML routes api: requests with "x-canary: yes" to v2, the others
// split between v1 and v2 by weight.
func routeYAML(w1, w2 int) string {
	return fmt.Sprintf(`
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: 10-canary}
spec:
  service: api
  matches: [{headers: [{name: x-canary, exact: "yes"}]}]
  backends: [{service: api, subset: v2}]
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: 90-split}
spec:
  service: api
  backends:
  - {service: api, subset: v1, weight: %d}
  - {service: api, subset: v2, weight: %d}
`, w1, w2)
}

func TestWeightedSplitHeaderMatchAndLiveRouteChange(t *testing.T) {
	meshd, web, _ := startSubsets(t)
	rev := applyDocs(t, meshd, routeYAML(80, 20))
	web.waitSnapshot(t, "routes", hasResource("Route", "90-split", rev))

	// One connection from the app carries every request of this test.
	conn := dialKeepAlive(t, web.up["api"])
	const n = 1000
	count := map[string]int{}
	for i := 0; i < n; i++ {
		code, e := conn.get(t, "/split", nil)
		if code != 200 {
			t.Fatalf("request %d: status %d", i, code)
		}
		count[e.App]++
	}
	// 80/20 of 1000: the standard deviation of v1's count is about 12.6;
	// the tolerance, ±60, is more than 4.7 of them.
	if count["v1"] < 740 || count["v1"] > 860 || count["v1"]+count["v2"] != n {
		t.Errorf("80/20 split over %d requests: %v", n, count)
	}
	for i := 0; i < 20; i++ {
		if _, e := conn.get(t, "/canary", http.Header{"X-Canary": {"yes"}}); e.App != "v2" {
			t.Fatalf("x-canary: yes went to %q", e.App)
		}
	}

	// A route change applies from the next request on the same
	// connection: everything to v2.
	rev = applyDocs(t, meshd, routeYAML(0, 1))
	web.waitSnapshot(t, "new split", hasResource("Route", "90-split", rev))
	for i := 0; i < 50; i++ {
		if _, e := conn.get(t, "/after-change", nil); e.App != "v2" {
			t.Fatalf("request %d after the change went to %q", i, e.App)
		}
	}
	// The Host-routed port follows the same routes.
	if _, body, e := call(t, plainHTTP(t), web.httpPort, "api.default", "/by-host", nil); e.App != "v2" {
		t.Fatalf("by Host after the change: %s", body)
	}
}

// startPair starts api twice (good and bad, both service account api,
// one app port) and web calling api, with Service api declaring that
// port and the given routes.
func startPair(t *testing.T, outlier balancer.Config, routes string) (*controlplanetest.Meshd, *echoApp, *echoApp, *trafficProxy) {
	t.Helper()
	meshd := controlplanetest.Start(t, controlplane.Config{})
	apps := replicas(t, "good", "bad")
	webApp := startEcho(t, "web")
	applyDocs(t, meshd, serviceYAML("api", httpPortYAML(apps[0].port), idOf("api").String())+routes)
	startTraffic(t, meshd, trafficOpts{service: "api", app: apps[0].addr})
	startTraffic(t, meshd, trafficOpts{service: "api", app: apps[1].addr})
	web := startTraffic(t, meshd, trafficOpts{service: "web", app: webApp.addr, upstreams: []string{"api"}, outlier: outlier})
	web.waitSnapshot(t, "both api endpoints", endpointsOf("api", 2))
	return meshd, apps[0], apps[1], web
}

func TestRetrySucceedsOnSecondEndpointAndTimeout(t *testing.T) {
	// No ejection: the bad endpoint stays in, so every request that
	// lands on it first needs its retry.
	_, good, bad, web := startPair(t, balancer.Config{ConsecutiveFailures: 1 << 30}, `
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: 10-slow}
spec:
  service: api
  matches: [{path: {prefix: /slow}}]
  backends: [{service: api}]
  timeout: 300ms
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: 90-api}
spec:
  service: api
  backends: [{service: api}]
  retries:
    attempts: 1
    retryOn: [gateway-error]
    budget: {percent: 100, minRetriesPerSecond: 1000}
`)
	web.waitSnapshot(t, "routes", hasResource("Route", "90-api", 0))
	bad.fail.Store(http.StatusServiceUnavailable)
	conn := dialKeepAlive(t, web.up["api"])
	for i := 0; i < 40; i++ {
		code, e := conn.get(t, "/retry", nil)
		if code != 200 || e.App != "good" {
			t.Fatalf("request %d: %d from %q", i, code, e.App)
		}
	}
	// The bad endpoint was tried (and failed) for some of them: each was
	// retried on the good one. (Each request picks either endpoint with
	// even odds; that none of 40 picked bad has odds 2^-40.)
	if bad.hits.Load() == 0 {
		t.Fatal("the failing endpoint was never tried")
	}
	if good.hits.Load() != 40 {
		t.Errorf("good served %d, want 40", good.hits.Load())
	}

	// A POST is not idempotent: not retried, the app sees the 503.
	client := plainHTTP(t)
	saw503 := false
	for i := 0; i < 40 && !saw503; i++ {
		resp, err := client.Post("http://"+web.up["api"]+"/post", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		saw503 = resp.StatusCode == http.StatusServiceUnavailable
	}
	if !saw503 {
		t.Error("no POST reached the failing endpoint unretried")
	}

	// The route timeout: the app never answers /slow; the caller gets
	// 504 when the route's 300ms are up (the test measures nothing).
	code, body, _ := call(t, client, web.up["api"], "", "/slow", nil)
	if code != http.StatusGatewayTimeout {
		t.Fatalf("/slow: %d %q, want 504", code, body)
	}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	clock := certstest.NewClock(time.Now())
	_, good, bad, web := startPair(t, balancer.Config{ConsecutiveFailures: 3, BaseEjection: time.Minute, Clock: clock}, "")
	bad.fail.Store(http.StatusInternalServerError)
	conn := dialKeepAlive(t, web.up["api"])
	// Until bad has failed three times in a row it is ejected...
	failures := 0
	for i := 0; failures < 3; i++ {
		if i == 200 {
			t.Fatal("bad was not picked three times in 200 requests")
		}
		if code, _ := conn.get(t, "/", nil); code == http.StatusInternalServerError {
			failures++
		}
	}
	// ...and then gets nothing while its ejection lasts (the clock does
	// not move).
	before := bad.hits.Load()
	for i := 0; i < 100; i++ {
		if code, e := conn.get(t, "/", nil); code != 200 || e.App != "good" {
			t.Fatalf("request %d while bad is ejected: %d from %q", i, code, e.App)
		}
	}
	if bad.hits.Load() != before {
		t.Fatalf("ejected endpoint got %d requests", bad.hits.Load()-before)
	}
	// Healthy again and past its ejection, it gets requests again.
	bad.fail.Store(0)
	clock.Add(time.Minute + time.Second)
	eventually(t, 10*time.Second, "bad back in rotation", func() error {
		if _, e := conn.get(t, "/", nil); e.App != "bad" {
			return errors.New("not yet")
		}
		return nil
	})
	// Never more than half out: with both failing, one of the two (at
	// most) is ejected, and requests keep reaching an app.
	good.fail.Store(http.StatusInternalServerError)
	bad.fail.Store(http.StatusInternalServerError)
	gb, bb := good.hits.Load(), bad.hits.Load()
	for i := 0; i < 60; i++ {
		if code, _ := conn.get(t, "/", nil); code != http.StatusInternalServerError {
			t.Fatalf("with both failing: %d", code)
		}
	}
	if good.hits.Load()+bad.hits.Load()-gb-bb != 60 {
		t.Fatal("requests were refused instead of reaching an endpoint")
	}
}

// startOne starts meshd, api (serving apiApp, with Service api declaring
// ports) and web with upstreams; it returns web once it knows api.
func startOne(t *testing.T, apiApp string, ports string, upstreams ...string) *trafficProxy {
	t.Helper()
	meshd := controlplanetest.Start(t, controlplane.Config{})
	webApp := startEcho(t, "web")
	rev := applyDocs(t, meshd, serviceYAML("api", ports, idOf("api").String())+
		serviceYAML("web", httpPortYAML(webApp.port), idOf("web").String()))
	startTraffic(t, meshd, trafficOpts{service: "api", app: apiApp})
	web := startTraffic(t, meshd, trafficOpts{service: "web", app: webApp.addr, upstreams: upstreams, httpPort: true})
	web.waitSnapshot(t, "api's endpoint", endpointsOf("api", 1))
	web.waitSnapshot(t, "Service api", hasResource("Service", "api", rev))
	return web
}

func TestGRPCUnaryAndStreaming(t *testing.T) {
	l := listen(t)
	srv := grpc.NewServer()
	health := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, health)
	health.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	port := portOf(t, l.Addr().String())
	web := startOne(t, l.Addr().String(), fmt.Sprintf("{name: grpc, port: %d, protocol: grpc}", port), "api")

	for _, via := range []struct {
		name   string
		target string
		opts   []grpc.DialOption
	}{
		{"local port", web.up["api"], nil},
		{"Host-routed port", web.httpPort, []grpc.DialOption{grpc.WithAuthority("api.default:" + strconv.Itoa(int(port)))}},
	} {
		t.Run(via.name, func(t *testing.T) {
			cc, err := grpc.NewClient("passthrough:///"+via.target,
				append(via.opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			client := healthpb.NewHealthClient(cc)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			// Unary.
			resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "orders"})
			if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check: %v, %v", resp, err)
			}
			// A gRPC error status crosses both proxies as it is.
			_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
			if status.Code(err) != codes.NotFound {
				t.Fatalf("Check of an unknown service: %v, want NotFound", err)
			}
			// Server streaming: each change arrives as it happens.
			stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "orders"})
			if err != nil {
				t.Fatal(err)
			}
			first, err := stream.Recv()
			if err != nil || first.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Watch first: %v, %v", first, err)
			}
			health.SetServingStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
			second, err := stream.Recv()
			if err != nil || second.Status != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("Watch second: %v, %v", second, err)
			}
			health.SetServingStatus("orders", healthpb.HealthCheckResponse_SERVING)
			third, err := stream.Recv()
			if err != nil || third.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Watch third: %v, %v", third, err)
			}
			cancel()
			if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
				t.Fatalf("after cancel: %v", err)
			}
		})
	}
}

func TestWebSocketEcho(t *testing.T) {
	l := listen(t)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: websocket.Handler(func(ws *websocket.Conn) {
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil || websocket.Message.Send(ws, "echo: "+msg) != nil {
				return
			}
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	web := startOne(t, l.Addr().String(), httpPortYAML(portOf(t, l.Addr().String())), "api")

	ws, err := websocket.Dial("ws://"+web.up["api"]+"/echo", "", "http://web.test/")
	if err != nil {
		t.Fatalf("WebSocket handshake through the mesh: %v", err)
	}
	defer ws.Close()
	_ = ws.SetDeadline(time.Now().Add(20 * time.Second))
	for _, msg := range []string{"hello", "through", strings.Repeat("a whole frame ", 1000)} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != "echo: "+msg {
			t.Fatalf("echo of %d bytes: %d bytes, %v", len(msg), len(got), err)
		}
	}
}

func TestTCPEcho(t *testing.T) {
	// api serves HTTP on its app port and a TCP echo on another.
	apiApp := startEcho(t, "api")
	echo := listen(t)
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() { echo.Close() })
	echoPort := portOf(t, echo.Addr().String())
	web := startOne(t, apiApp.addr, httpPortYAML(apiApp.port)+fmt.Sprintf(", {name: echo, port: %d, protocol: tcp}", echoPort),
		"api", fmt.Sprintf("api:%d", echoPort))

	for i := 0; i < 3; i++ { // each connection is its own stream
		c, err := net.DialTimeout("tcp", web.up[fmt.Sprintf("api:%d", echoPort)], 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		msg := strings.Repeat(fmt.Sprintf("tcp through the mesh %d\n", i), 5000)
		// A first exchange while both directions are open...
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(io.LimitReader(c, 5)).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("ping: %q, %v", line, err)
		}
		// ...then a large one, and the half-close crosses the mesh: the
		// echo server ends when our side does, and so does our read.
		errc := make(chan error, 1)
		go func() {
			_, err := io.WriteString(c, msg)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			errc <- err
		}()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != msg {
			t.Fatalf("echo: %d of %d bytes, %v", len(got), len(msg), err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// The HTTP port of the same service still answers HTTP.
	if code, body, e := call(t, plainHTTP(t), web.up["api"], "", "/", nil); code != 200 || e.App != "api" {
		t.Fatalf("HTTP port: %d %s", code, body)
	}
}
