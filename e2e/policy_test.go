package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"minimesh/api/pathnorm"
	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/sidecar"
	meshv1 "minimesh/proto/mesh/v1"

	"github.com/prometheus/client_golang/prometheus"
)

// recorder is a real HTTP app on loopback that records the raw request
// target of every request it receives, by X-Request-Id.
type recorder struct {
	addr string
	port uint32
	mu   sync.Mutex
	got  map[string]string // request id -> RequestURI
	all  []string
	// hold: requests for /hold wait until it is closed, after telling
	// held.
	hold, held chan struct{}
}

func startRecorder(t *testing.T) *recorder {
	t.Helper()
	l := listen(t)
	rec := &recorder{addr: l.Addr().String(), port: portOf(t, l.Addr().String()), got: map[string]string{},
		hold: make(chan struct{}), held: make(chan struct{}, 16)}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
			if r.URL.Path == "/hold" {
				rec.held <- struct{}{}
				select {
				case <-rec.hold:
				case <-r.Context().Done():
				}
			}
			rec.mu.Lock()
			rec.got[r.Header.Get("X-Request-Id")] = r.RequestURI
			rec.all = append(rec.all, r.RequestURI)
			rec.mu.Unlock()
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "ok "+r.RequestURI)
		}),
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return rec
}

func (r *recorder) received(id string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.got[id]
	return v, ok
}

func (r *recorder) paths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.all...)
}

// policyMesh is meshd, an "api" app recording what it receives behind its
// proxy, and a "web" proxy whose SVID the tests use to talk to api's
// inbound directly, over raw mTLS sockets.
type policyMesh struct {
	meshd   *controlplanetest.Meshd
	app     *recorder
	api     *trafficProxy
	web     *trafficProxy
	inbound string // api's inbound address
}

func startPolicyMesh(t *testing.T, docs string) *policyMesh {
	t.Helper()
	return startPolicyMeshWith(t, docs, nil)
}

// startPolicyMeshWith lets the test change api's sidecar config.
func startPolicyMeshWith(t *testing.T, docs string, edit func(*sidecar.Config)) *policyMesh {
	t.Helper()
	pm := &policyMesh{meshd: controlplanetest.Start(t, controlplane.Config{}), app: startRecorder(t)}
	rev := applyDocs(t, pm.meshd, serviceYAML("api", httpPortYAML(pm.app.port), idOf("api").String())+docs)
	pm.api = startSidecar(t, pm.meshd, "api", pm.app.addr, edit)
	webApp := startEcho(t, "web")
	pm.web = startTraffic(t, pm.meshd, trafficOpts{service: "web", app: webApp.addr, upstreams: []string{"api"}})
	pm.web.waitSnapshot(t, "api's endpoint", endpointsOf("api", 1))
	pm.api.waitSnapshot(t, "api's service", hasResource("Service", "api", rev))
	for _, e := range pm.web.Agent.Applied().GetEndpoints() {
		if e.GetService() == "api" {
			pm.inbound = e.GetAddress()
		}
	}
	return pm
}

// startSidecar is startTraffic for a proxy without outbound ports, with a
// hook to change its config.
func startSidecar(t *testing.T, m *controlplanetest.Meshd, service, appAddr string, edit func(*sidecar.Config)) *trafficProxy {
	t.Helper()
	tok := m.Token(t, "default", service, 1)
	inL, adminL := listen(t), listen(t)
	h := &trafficProxy{admin: adminL.Addr().String(), up: map[string]string{}}
	cfg := sidecar.Config{
		ControlPlane: m.Addr, Token: tok.Secret, CAPin: tok.CaPin,
		Service: service, App: appAddr, StateDir: t.TempDir(),
		InboundListener: inL, AdminListener: adminL,
		Logger: logger(), AgentBackoffMax: time.Second, Version: "test",
		Registry: prometheus.NewRegistry(),
	}
	if edit != nil {
		edit(&cfg)
	}
	h.Sidecar, h.cancel, h.done = runSidecar(t, service, cfg)
	waitAdminReady(t, service, h.admin)
	return h
}

// dialAPI opens an mTLS connection to api's inbound as web, HTTP/1.1.
func (pm *policyMesh) dialAPI(t *testing.T) *tls.Conn {
	t.Helper()
	tc := certs.MTLSClientConfig(pm.web.Agent.SVIDSource(), pm.web.Agent.BundleSource(), certs.AuthorizeID(idOf("api")), certs.TLSOptions{})
	tc.NextProtos = []string{"http/1.1"}
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", pm.inbound, tc)
	if err != nil {
		t.Fatalf("dial api's inbound: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawConn sends raw HTTP/1.1 requests on one mTLS connection, redialing
// when the server closed it.
type rawConn struct {
	pm *policyMesh
	c  net.Conn
	br *bufio.Reader
	// dial, when set, opens the connection instead (plain TCP to an
	// outbound port, say).
	dial func(t *testing.T) net.Conn
}

func (rc *rawConn) do(t *testing.T, raw string) (*http.Response, string, error) {
	t.Helper()
	if rc.c == nil {
		if rc.dial != nil {
			rc.c = rc.dial(t)
		} else {
			rc.c = rc.pm.dialAPI(t)
		}
		rc.br = bufio.NewReader(rc.c)
	}
	_ = rc.c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(rc.c, raw); err != nil {
		rc.c.Close()
		rc.c = nil
		return nil, "", err
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		rc.c.Close()
		rc.c = nil
		return nil, "", err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Close {
		rc.c.Close()
		rc.c = nil
	}
	return resp, string(b), nil
}

// pathVariants are spellings of paths around the protected "/admin":
// encodings, dot segments, double slashes, case, ';' parameters, unicode.
func pathVariants() []string {
	admins := []string{
		"admin", "Admin", "ADMIN", "aDmIn", "%61dmin", "%41dmin", "adm%69n", "%61%64%6d%69%6e", "%61%64%6D%69%6E",
		"adm%C4%B1n", "ADM%C4%B0N", "adm%C4%B0n", "%E2%84%AAadmin", "admın", "ADMİN", "ad%6din", "ADMIN%2f",
		"admin%00", "admin%2500", "%2561dmin", "admin;x", "admin%3b", "admin%3Bx", "ad%C0%ADmin", "%C0%AE%C0%AE/admin",
		"admin%20", "admin.", "admin~", "admin%7e", "ａdmin",
	}
	prefixes := []string{
		"/", "//", "///", "/./", "/.//", "/x/../", "/x/%2e%2e/", "/x/.%2e/", "/x/%2E./", "/x/%2e%2E/",
		"/public/../", "/public//../", "/public/./../", "/public/x/../../", "/%2e/", "/x/..//",
		"/public%2f..%2f", "/public%2F..%2F", "/public%5c..%5c", "/public\\..\\", "/public;x/../",
		"/x/..;/", "/x/%2e%2e;/", "/..%2f", "/%2e%2e/", "/../",
	}
	suffixes := []string{"", "/", "/users", "/users/../../admin", "?x=1"}
	var out []string
	for _, p := range prefixes {
		for _, a := range admins {
			out = append(out, p+a)
		}
	}
	for _, a := range admins[:8] {
		for _, s := range suffixes {
			out = append(out, "/"+a+s)
		}
	}
	out = append(out, "/public", "/public/", "/public/x", "/public/admin", "/publicadmin", "/x/../public",
		"/caf%C3%A9", "/café", "/%", "/%zz", "/%4", "/a%2fb", "/x%00", "/x\ty", "/admin#frag", "*",
		"/public/..%2f..%2fadmin", "/public/%2e%2e%2fadmin", "/%c0%afadmin", "/%e0%80%afadmin")
	return out
}

// TestPathCorpusAgainstDenyRule sends every variant over a raw mTLS socket
// to the inbound of a service whose policy denies "/admin" (any case): each
// is refused, or reaches the app in the normalized form the policy
// matched, and none reaches the app as a path under /admin.
func TestPathCorpusAgainstDenyRule(t *testing.T) {
	pm := startPolicyMesh(t, `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-admin}
spec:
  service: api
  rules:
  - action: deny
    paths: [{prefix: /admin, caseInsensitive: true}]
`)
	variants := pathVariants()
	if len(variants) < 300 {
		t.Fatalf("only %d variants", len(variants))
	}
	counts := runCorpus(t, pm, &rawConn{pm: pm}, variants, "corpus-")
	if counts[200] == 0 || counts[403] < 50 || counts[400] < 50 {
		t.Errorf("status counts %v: expected many of each of 200, 400 and 403", counts)
	}
	// The same through web's outbound, which carries them to api's
	// inbound over HTTP/2 (the path as :path).
	out := runCorpus(t, pm, &rawConn{pm: pm, dial: func(t *testing.T) net.Conn {
		c, err := net.DialTimeout("tcp", pm.web.up["api"], 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}}, variants, "via-web-")
	if out[200] == 0 || out[403] < 50 {
		t.Errorf("through the outbound, status counts %v: expected many 200 and 403", out)
	}
	t.Logf("through web's outbound: %v", out)
	t.Logf("%d variants: %v", len(variants), counts)
	if n := pm.api.counterValue(t, "minimesh_proxy_authz_decisions_total", "decision", "deny"); n < 50 {
		t.Errorf("authz deny decisions counted: %v", n)
	}
}

// counterValue sums a counter family of the proxy's registry, filtered by
// one label.
func (h *trafficProxy) counterValue(t *testing.T, name, label, value string) float64 {
	t.Helper()
	body, err := httpGet("http://" + h.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, label+`="`+value+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			n += v
		}
	}
	return n
}

// TestAuthzAllowListThroughOutbound: with an ALLOW rule for web on GET,
// web's app reaches api through its outbound; a POST is denied (403)
// by default deny, and the app never sees it.
func TestAuthzAllowListThroughOutbound(t *testing.T) {
	pm := startPolicyMesh(t, `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-reads}
spec:
  service: api
  rules:
  - action: allow
    from: ["spiffe://minimesh.local/ns/default/sa/web"]
    methods: [GET]
`)
	client := plainHTTP(t)
	get := func(method, path string) int {
		req, _ := http.NewRequest(method, "http://"+pm.web.up["api"]+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, 10*time.Second, "GET allowed", func() error {
		if c := get("GET", "/orders/1"); c != 200 {
			return fmt.Errorf("GET %d", c)
		}
		return nil
	})
	if c := get("POST", "/orders/2"); c != http.StatusForbidden {
		t.Fatalf("POST: %d, want 403", c)
	}
	for _, p := range pm.app.paths() {
		if p == "/orders/2" {
			t.Fatal("the denied POST reached the app")
		}
	}
}

// TestRequestSmugglingRefused sends ambiguous HTTP/1.1 framing over a raw
// mTLS socket to the inbound: each is answered 400 (or the connection is
// closed without an answer), and the request hidden behind it never
// reaches the app.
func TestRequestSmugglingRefused(t *testing.T) {
	pm := startPolicyMesh(t, "")
	hidden := "GET /smuggled HTTP/1.1\r\nHost: api\r\n\r\n"
	cases := map[string]string{
		"CL+TE":               "POST /a HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden,
		"TE+CL":               "POST /a HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + hidden,
		"duplicate CL":        "POST /a HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n" + hidden,
		"duplicate CL, equal": "POST /a HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n" + hidden,
		"obs-fold":            "GET /a HTTP/1.1\r\nHost: api\r\nX-Fold: a\r\n Transfer-Encoding: chunked\r\n\r\n" + hidden,
		"obs-fold tab":        "GET /a HTTP/1.1\r\nHost: api\r\nX-Fold: a\r\n\tb\r\n\r\n" + hidden,
		"bare LF":             "GET /a HTTP/1.1\nHost: api\n\n" + hidden,
		"bare LF in header":   "GET /a HTTP/1.1\r\nHost: api\nX-A: b\r\n\r\n" + hidden,
		"lone CR":             "GET /a HTTP/1.1\r\nHost: api\rX-A: b\r\n\r\n" + hidden,
		"TE not chunked":      "POST /a HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: identity\r\n\r\n" + hidden,
		"two TE":              "POST /a HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + hidden,
		"bad chunk size":      "POST /a HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n" + hidden,
		"chunk without CRLF":  "POST /a HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n" + hidden,
	}
	for name, raw := range cases {
		t.Run(name, func(t *testing.T) {
			c := pm.dialAPI(t)
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			if _, err := io.WriteString(c, raw); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				// A broken chunked body is found after its headers went
				// to the app: the request fails (502), the rest is dropped.
				bodyCase := strings.HasPrefix(name, "bad chunk") || strings.HasPrefix(name, "chunk without")
				if resp.StatusCode != http.StatusBadRequest && !(bodyCase && resp.StatusCode == http.StatusBadGateway) {
					t.Errorf("status %d (%q), want 400", resp.StatusCode, b)
				}
				if next, err := http.ReadResponse(br, nil); err == nil {
					t.Errorf("a second answer on the connection: %d", next.StatusCode)
				}
			}
		})
	}
	// A well-framed request on a new connection still goes through, and
	// nothing of the above reached the app.
	rc := &rawConn{pm: pm}
	resp, body, err := rc.do(t, "POST /ok HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a chunked request: %v %v %q", err, resp, body)
	}
	resp, body, err = rc.do(t, "GET /ok2 HTTP/1.1\r\nHost: api\r\nContent-Length: 3\r\n\r\nabc")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a keep-alive request after it: %v %v %q", err, resp, body)
	}
	for _, p := range pm.app.paths() {
		if p != "/ok" && p != "/ok2" && p != "/a" {
			t.Errorf("the app received %q", p)
		}
	}
	if n := len(pm.app.paths()); n > 4 {
		t.Errorf("the app received %d requests: %v", n, pm.app.paths())
	}
}

// TestLivePolicyChangeOnKeepAlive: a connection opened before a DENY
// policy is applied sees it on its next request; removing the rule
// (an ALLOW-only policy) lets it through again, on the same connection.
func TestLivePolicyChangeOnKeepAlive(t *testing.T) {
	pm := startPolicyMesh(t, "")
	rc := &rawConn{pm: pm}
	get := func() int {
		resp, body, err := rc.do(t, "GET /orders HTTP/1.1\r\nHost: api\r\n\r\n")
		if err != nil {
			t.Fatal(err)
		}
		_ = body
		return resp.StatusCode
	}
	if c := get(); c != 200 {
		t.Fatalf("before: %d", c)
	}
	conn := rc.c
	rev := applyDocs(t, pm.meshd, `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: lockdown}
spec:
  service: api
  rules:
  - action: deny
    from: ["spiffe://minimesh.local/ns/default/sa/web"]
    paths: [{prefix: /orders}]
`)
	pm.api.waitSnapshot(t, "the deny policy", hasResource("AuthorizationPolicy", "lockdown", rev))
	if c := get(); c != http.StatusForbidden {
		t.Fatalf("after the DENY policy: %d, want 403", c)
	}
	rev = applyDocs(t, pm.meshd, `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: lockdown}
spec:
  service: api
  rules:
  - action: allow
    from: ["spiffe://minimesh.local/ns/default/sa/*"]
`)
	pm.api.waitSnapshot(t, "the allow policy", hasResource("AuthorizationPolicy", "lockdown", rev))
	if c := get(); c != 200 {
		t.Fatalf("after the ALLOW policy: %d", c)
	}
	if rc.c != conn {
		t.Fatal("the requests did not share one keep-alive connection")
	}
}

// TestRateLimitAndAccessLog: a per-identity RateLimit answers 429 with
// Retry-After and RateLimit-* headers once its bucket is empty; an
// AccessLog switched on live writes one JSON line per request with the
// caller's identity, and a path with control characters stays on its
// line, escaped.
func TestRateLimitAndAccessLog(t *testing.T) {
	pm := startPolicyMesh(t, `
apiVersion: minimesh.io/v1alpha1
kind: RateLimit
metadata: {name: per-caller}
spec:
  service: api
  requestsPerSecond: 0.001
  burst: 3
  perSourceIdentity: true
`)
	rc := &rawConn{pm: pm}
	var last *http.Response
	for i := 0; i < 4; i++ {
		resp, _, err := rc.do(t, "GET /r HTTP/1.1\r\nHost: api\r\n\r\n")
		if err != nil {
			t.Fatal(err)
		}
		last = resp
		if i < 3 && resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
		if i < 3 && resp.Header.Get("Ratelimit-Remaining") != strconv.Itoa(2-i) {
			t.Errorf("request %d: RateLimit-Remaining %q", i, resp.Header.Get("Ratelimit-Remaining"))
		}
	}
	if last.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("4th request: %d, want 429", last.StatusCode)
	}
	for _, h := range []string{"Retry-After", "Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset", "Ratelimit-Policy"} {
		if last.Header.Get(h) == "" {
			t.Errorf("429 without %s: %v", h, last.Header)
		}
	}
	if n := pm.api.counterValue(t, "minimesh_proxy_ratelimit_decisions_total", "decision", "limited"); n != 1 {
		t.Errorf("limited decisions counted: %v", n)
	}
	if got := len(pm.app.paths()); got != 3 {
		t.Errorf("the app saw %d requests, want 3", got)
	}
}

// TestAccessLogLiveWithInjectionEscaped: an AccessLog resource switches
// the api proxy's access log on live; each request gives one JSON line
// with the caller's identity, method, path, status, bytes, route and
// request id; a path carrying control characters (percent-encoded on the
// wire, refused with 400) stays on one line with them escaped.
func TestAccessLogLiveWithInjectionEscaped(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "access.log")
	pm := startPolicyMeshWith(t, "", func(c *sidecar.Config) { c.AccessLogFile = logFile })
	rc := &rawConn{pm: pm}
	if resp, _, err := rc.do(t, "GET /before HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before: %v %v", resp, err)
	}
	rev := applyDocs(t, pm.meshd, `
apiVersion: minimesh.io/v1alpha1
kind: AccessLog
metadata: {name: api-log}
spec:
  service: api
  enabled: true
  fields: [source_identity, method, path, status, bytes_received, bytes_sent, duration_ms, upstream, route, request_id, user_agent]
`)
	pm.api.waitSnapshot(t, "the access log", hasResource("AccessLog", "api-log", rev))
	if resp, _, err := rc.do(t, "POST /orders HTTP/1.1\r\nHost: api\r\nX-Request-Id: req-1\r\nContent-Length: 5\r\n\r\nhello"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("logged request: %v %v", resp, err)
	}
	// A raw ESC and newline cannot be sent in a request line; the user
	// agent can carry neither either. Percent-encoded, pathnorm refuses
	// them (400) and the line shows the path as received.
	// Header values may carry UTF-8: a C1 control (U+0085, NEL) and
	// U+2028 split lines in some log viewers and must be escaped.
	if resp, _, err := rc.do(t, "GET /x%0a%1b[31m HTTP/1.1\r\nHost: api\r\nX-Request-Id: req-2\r\nUser-Agent: evil\xc2\x85\xe2\x80\xa8{\"status\":1}\r\n\r\n"); err != nil || resp.StatusCode != 400 {
		t.Fatalf("injection: %v %v", resp, err)
	}
	var lines []map[string]any
	eventually(t, 10*time.Second, "two access-log lines", func() error {
		b, err := os.ReadFile(logFile)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("\xc2\x85")) || bytes.Contains(b, []byte("\xe2\x80\xa8")) {
			return fmt.Errorf("raw control characters in the log: %q", b)
		}
		if lines, err = jsonLines(b); err != nil {
			return err
		}
		if len(lines) != 2 {
			return fmt.Errorf("%d lines: %s", len(lines), b)
		}
		return nil
	})
	first := lines[0]
	want := map[string]any{"source_identity": idOf("web").String(), "method": "POST", "path": "/orders",
		"status": float64(200), "bytes_received": float64(5), "request_id": "req-1", "upstream": pm.app.addr}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("%s = %v, want %v (line %v)", k, first[k], v, first)
		}
	}
	if first["bytes_sent"].(float64) <= 0 {
		t.Errorf("bytes_sent %v", first["bytes_sent"])
	}
	if lines[1]["status"] != float64(400) || lines[1]["request_id"] != "req-2" ||
		lines[1]["user_agent"] != "evil\u0085\u2028{\"status\":1}" || lines[1]["path"] != "/x%0a%1b[31m" {
		t.Errorf("second line %v", lines[1])
	}
	st, err := os.Stat(logFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("access log file mode: %v %v", st.Mode(), err)
	}
}

// TestDeniedIdentityConnectionsClosed: when meshd denies web's identity,
// api's inbound closes the connection web opened before, within the push,
// and refuses new ones; the closing is counted.
func TestDeniedIdentityConnectionsClosed(t *testing.T) {
	pm := startPolicyMesh(t, "")
	rc := &rawConn{pm: pm}
	if resp, _, err := rc.do(t, "GET /a HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before: %v %v", resp, err)
	}
	open := rc.c
	if _, err := pm.meshd.Operator(t).DenyIdentity(context.Background(), &meshv1.DenyIdentityRequest{SpiffeId: idOf("web").String()}); err != nil {
		t.Fatal(err)
	}
	pm.api.waitSnapshot(t, "web denied", func(s *meshv1.Snapshot) error {
		if !slices.Contains(s.GetDeniedIdentities(), idOf("web").String()) {
			return errors.New("not yet")
		}
		return nil
	})
	// The open connection is closed: a read ends without a response.
	_ = open.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := open.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the denied peer's connection is still open (read %d, %v)", n, err)
	}
	// A new connection is refused: the handshake or the first exchange fails.
	rc2 := &rawConn{pm: pm}
	c, err := tlsDial(pm)
	if err == nil {
		rc2.c, rc2.br = c, bufio.NewReader(c)
		if resp, _, err := rc2.do(t, "GET /b HTTP/1.1\r\nHost: api\r\n\r\n"); err == nil {
			t.Fatalf("a new connection of the denied peer was served: %d", resp.StatusCode)
		}
	}
	if n := pm.api.counterValue(t, "minimesh_proxy_connections_closed_total", "reason", "revoked"); n < 1 {
		t.Errorf("closed connections counted: %v", n)
	}
	if n := pm.api.counterValue(t, "minimesh_proxy_handshake_failures_total", "reason", "revoked"); n < 1 {
		t.Errorf("refused handshakes counted: %v", n)
	}
	for _, p := range pm.app.paths() {
		if p == "/b" {
			t.Error("the denied peer reached the app")
		}
	}
}

func tlsDial(pm *policyMesh) (*tls.Conn, error) {
	tc := certs.MTLSClientConfig(pm.web.Agent.SVIDSource(), pm.web.Agent.BundleSource(), certs.AuthorizeID(idOf("api")), certs.TLSOptions{})
	tc.NextProtos = []string{"http/1.1"}
	return tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", pm.inbound, tc)
}

// TestQuitQuitQuitDrains: POST /quitquitquit on the admin port makes the
// proxy stop accepting at once while a request in flight finishes (its
// answer arrives after new connections are already refused), then the
// proxy exits cleanly.
func TestQuitQuitQuitDrains(t *testing.T) {
	pm := startPolicyMeshWith(t, "", func(c *sidecar.Config) { c.Drain = time.Minute })
	rc := &rawConn{pm: pm}
	rc.c = pm.dialAPI(t)
	rc.br = bufio.NewReader(rc.c)
	type result struct {
		code int
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		_ = rc.c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(rc.c, "GET /hold HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
			inflight <- result{err: err}
			return
		}
		resp, err := http.ReadResponse(rc.br, nil)
		if err != nil {
			inflight <- result{err: err}
			return
		}
		resp.Body.Close()
		inflight <- result{code: resp.StatusCode}
	}()
	<-pm.app.held

	admin := plainHTTP(t)
	resp, err := admin.Get("http://" + pm.api.admin + "/quitquitquit")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /quitquitquit: %d", resp.StatusCode)
	}
	resp, err = admin.Post("http://"+pm.api.admin+"/quitquitquit", "", nil)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST /quitquitquit without X-Mesh-Admin: %v %v, want 403", resp, err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://"+pm.api.admin+"/quitquitquit", nil)
	req.Header.Set("X-Mesh-Admin", "1")
	resp, err = admin.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /quitquitquit: %v %v", resp, err)
	}
	resp.Body.Close()
	eventually(t, 10*time.Second, "the inbound stops accepting", func() error {
		c, err := net.DialTimeout("tcp", pm.inbound, time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		return errors.New("still accepting")
	})
	select {
	case r := <-inflight:
		t.Fatalf("the request in flight ended before the app answered: %+v", r)
	default:
	}
	close(pm.app.hold)
	if r := <-inflight; r.err != nil || r.code != 200 {
		t.Fatalf("the request in flight: %+v", r)
	}
	err = <-pm.api.done
	pm.api.done <- err // for the cleanup
	if err != nil {
		t.Fatalf("the proxy exited with %v", err)
	}
}

// TestDryRunAndAuditCountedAndMetricsBounded: a dry-run DENY and an
// AUDIT rule let the request through and are counted; the inbound's
// metrics carry the source service (the caller's service account), the
// destination service and the class, and no identity, path or Host.
func TestDryRunAndAuditCountedAndMetricsBounded(t *testing.T) {
	pm := startPolicyMesh(t, `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: trial}
spec:
  service: api
  dryRun: true
  rules:
  - action: deny
    paths: [{prefix: /orders}]
---
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: watch}
spec:
  service: api
  rules:
  - action: audit
    methods: [DELETE]
`)
	rc := &rawConn{pm: pm}
	for _, req := range []string{"GET /orders/1", "DELETE /x", "GET /other"} {
		resp, body, err := rc.do(t, req+" HTTP/1.1\r\nHost: api.evil.example\r\n\r\n")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v %q", req, resp, err, body)
		}
	}
	if n := pm.api.counterValue(t, "minimesh_proxy_authz_decisions_total", "decision", "dry_run_deny"); n != 1 {
		t.Errorf("dry-run denials counted: %v", n)
	}
	if n := pm.api.counterValue(t, "minimesh_proxy_authz_decisions_total", "decision", "audit"); n != 1 {
		t.Errorf("audits counted: %v", n)
	}
	body, err := httpGet("http://" + pm.api.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, `minimesh_proxy_inbound_requests_total{class="2xx",destination_namespace="default",destination_service="api",source_namespace="default",source_service="web"} 3`) {
		t.Errorf("no inbound request series for web -> api:\n%s", grepLines(body, "inbound_requests"))
	}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, "minimesh_proxy_") {
			continue
		}
		for _, bad := range []string{"spiffe", "/orders", "/other", "evil", "/x"} {
			if strings.Contains(line, bad) {
				t.Errorf("a metric label carries %q: %s", bad, line)
			}
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestTCPStreamClosedWhenNoLongerAllowed: a TCP stream through web's
// outbound to api's tcp port is ended when a policy that denies web is
// pushed, and a new one is refused.
func TestTCPStreamClosedWhenNoLongerAllowed(t *testing.T) {
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
			}()
		}
	}()
	t.Cleanup(func() { echo.Close() })
	echoPort := portOf(t, echo.Addr().String())
	meshd := controlplanetest.Start(t, controlplane.Config{})
	app := startRecorder(t)
	rev := applyDocs(t, meshd, serviceYAML("api", httpPortYAML(app.port)+fmt.Sprintf(", {name: echo, port: %d, protocol: tcp}", echoPort), idOf("api").String()))
	api := startSidecar(t, meshd, "api", app.addr, nil)
	webApp := startEcho(t, "web")
	upName := fmt.Sprintf("api:%d", echoPort)
	web := startTraffic(t, meshd, trafficOpts{service: "web", app: webApp.addr, upstreams: []string{upName}})
	web.waitSnapshot(t, "api's endpoint", endpointsOf("api", 1))
	web.waitSnapshot(t, "Service api", hasResource("Service", "api", rev))
	api.waitSnapshot(t, "Service api", hasResource("Service", "api", rev))

	c, err := net.DialTimeout("tcp", web.up[upName], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("ping: %q %v", line, err)
	}
	rev = applyDocs(t, meshd, `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: no-web}
spec:
  service: api
  rules:
  - action: deny
    from: ["spiffe://minimesh.local/ns/default/sa/web"]
`)
	api.waitSnapshot(t, "the policy", hasResource("AuthorizationPolicy", "no-web", rev))
	if line, err := br.ReadString('\n'); err == nil {
		t.Fatalf("the stream is still open: read %q", line)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the stream was not closed")
	}
	if n := api.counterValue(t, "minimesh_proxy_connections_closed_total", "reason", "unauthorized"); n != 1 {
		t.Errorf("closed streams counted: %v", n)
	}
	c2, err := net.DialTimeout("tcp", web.up[upName], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = io.WriteString(c2, "ping\n")
	if line, err := bufio.NewReader(c2).ReadString('\n'); err == nil {
		t.Fatalf("a new stream was relayed: %q", line)
	}
}

// TestDeniedUpstreamClosedAtOutbound: when meshd denies api's identity,
// web's outbound closes the HTTP/2 connection it holds to api's proxy
// (counted), and web's app is no longer served by api.
func TestDeniedUpstreamClosedAtOutbound(t *testing.T) {
	pm := startPolicyMesh(t, "")
	client := plainHTTP(t)
	eventually(t, 10*time.Second, "web reaches api", func() error {
		resp, err := client.Get("http://" + pm.web.up["api"] + "/via-web")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	if _, err := pm.meshd.Operator(t).DenyIdentity(context.Background(), &meshv1.DenyIdentityRequest{SpiffeId: idOf("api").String()}); err != nil {
		t.Fatal(err)
	}
	pm.web.waitSnapshot(t, "api denied", func(s *meshv1.Snapshot) error {
		if !slices.Contains(s.GetDeniedIdentities(), idOf("api").String()) {
			return errors.New("not yet")
		}
		return nil
	})
	eventually(t, 10*time.Second, "the connection to api closed", func() error {
		if n := pm.web.counterValue(t, "minimesh_proxy_connections_closed_total", "listener", "outbound"); n != 1 {
			return fmt.Errorf("%v closed", n)
		}
		return nil
	})
	before := len(pm.app.paths())
	resp, err := client.Get("http://" + pm.web.up["api"] + "/after")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 || len(pm.app.paths()) != before {
		t.Fatalf("the denied upstream still served web: %d", resp.StatusCode)
	}
}

// runCorpus sends every variant on rc and checks what the app received;
// it returns the count of each status. Through an outbound, a path its
// own HTTP client cannot send is a 502 from the outbound (nothing sent).
func runCorpus(t *testing.T, pm *policyMesh, rc *rawConn, variants []string, prefix string) map[int]int {
	t.Helper()
	counts := map[int]int{}
	for i, v := range variants {
		id := prefix + strconv.Itoa(i)
		resp, body, err := rc.do(t, "GET "+v+" HTTP/1.1\r\nHost: api\r\nX-Request-Id: "+id+"\r\n\r\n")
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		counts[resp.StatusCode]++
		got, reached := pm.app.received(id)
		switch {
		case resp.StatusCode == http.StatusOK:
			if !reached {
				t.Errorf("%q: 200 %q but the app saw nothing", v, body)
				continue
			}
			raw := v
			if i := strings.IndexByte(raw, '?'); i >= 0 {
				raw = raw[:i]
			}
			want, err := pathnorm.Normalize(raw)
			if err != nil {
				t.Errorf("%q: forwarded although pathnorm refuses it (%v)", v, err)
				continue
			}
			gotPath := got
			if i := strings.IndexByte(gotPath, '?'); i >= 0 {
				gotPath = gotPath[:i]
			}
			if gotPath != want {
				t.Errorf("%q: the app received %q, the policy matched %q", v, got, want)
			}
		case reached:
			t.Errorf("%q: answered %d but the app received %q", v, resp.StatusCode, got)
		case resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusForbidden && !(rc.dial != nil && resp.StatusCode == http.StatusBadGateway):
			t.Errorf("%q: status %d (%q), want 200, 400 or 403", v, resp.StatusCode, body)
		}
	}
	for _, p := range pm.app.paths() {
		dec, err := url.PathUnescape(strings.SplitN(p, "?", 2)[0])
		if err != nil {
			dec = p
		}
		if strings.HasPrefix(strings.ToLower(dec), "/admin") || strings.HasPrefix(strings.ToLower(p), "/admin") {
			t.Errorf("the app received the protected path %q", p)
		}
	}
	return counts
}

// TestRateLimitPerRoute: a RateLimit naming a Route of the service limits
// only the requests that match that route.
func TestRateLimitPerRoute(t *testing.T) {
	pm := startPolicyMesh(t, `
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: orders}
spec:
  service: api
  matches: [{path: {prefix: /orders}}]
  backends: [{service: api}]
---
apiVersion: minimesh.io/v1alpha1
kind: RateLimit
metadata: {name: orders-limit}
spec:
  service: api
  route: orders
  requestsPerSecond: 0.001
  burst: 1
`)
	rc := &rawConn{pm: pm}
	status := func(path string) int {
		resp, _, err := rc.do(t, "GET "+path+" HTTP/1.1\r\nHost: api\r\n\r\n")
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	if c := status("/orders/1"); c != 200 {
		t.Fatalf("first /orders: %d", c)
	}
	if c := status("/orders/2"); c != http.StatusTooManyRequests {
		t.Fatalf("second /orders: %d, want 429", c)
	}
	for i := 0; i < 3; i++ {
		if c := status("/other"); c != 200 {
			t.Fatalf("/other: %d (not on the route, not limited)", c)
		}
	}
}

// TestPublicPortAppliesPolicy: the service's AuthorizationPolicy applies at
// the public HTTPS port to clients outside the mesh, who have no identity:
// a rule for everyone decides them, a rule for web alone never admits them.
// Its requests are in the service's access log, without a source identity.
func TestPublicPortAppliesPolicy(t *testing.T) {
	var publicAddr, publicCert string
	logFile := filepath.Join(t.TempDir(), "access.log")
	pm := startPolicyMeshWith(t, `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: edge}
spec:
  service: api
  rules:
  - {action: deny, paths: [{prefix: /admin}]}
  - {action: allow, paths: [{prefix: /public}]}
  - {action: allow, from: ["spiffe://minimesh.local/ns/default/sa/web"], methods: [GET]}
---
apiVersion: minimesh.io/v1alpha1
kind: AccessLog
metadata: {name: api-log}
spec: {service: api, enabled: true, fields: [source_identity, source_address, method, path, status, upstream]}
`, func(cfg *sidecar.Config) {
		cfg.AccessLogFile = logFile
		pl := listen(t)
		certFile, keyFile := writePublicCert(t, t.TempDir())
		cfg.PublicListener, cfg.PublicCert, cfg.PublicKey = pl, certFile, keyFile
		publicAddr, publicCert = pl.Addr().String(), certFile
	})
	client := publicClient(t, publicCert)
	status := func(path string) int {
		resp, err := client.Get("https://" + publicAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, 10*time.Second, "the policy in force at the public port", func() error {
		if c := status("/admin/users"); c != http.StatusForbidden {
			return fmt.Errorf("GET /admin/users: %d, want 403", c)
		}
		return nil
	})
	if c := status("/public/./page"); c != http.StatusOK {
		t.Errorf("GET /public/./page: %d, want 200", c)
	}
	if c := status("/orders/1"); c != http.StatusForbidden {
		t.Errorf("GET /orders/1 (allowed for web only): %d, want 403", c)
	}
	for _, p := range pm.app.paths() {
		if strings.HasPrefix(p, "/admin") || strings.HasPrefix(p, "/orders") {
			t.Errorf("a denied request reached the app: %s", p)
		}
	}
	if !slices.Contains(pm.app.paths(), "/public/page") {
		t.Errorf("the app did not get the normalized /public/page: %q", pm.app.paths())
	}

	var lines []map[string]any
	eventually(t, 10*time.Second, "three access-log lines from the public port", func() error {
		b, err := os.ReadFile(logFile)
		if err != nil {
			return err
		}
		if lines, err = jsonLines(b); err != nil {
			return err
		}
		if len(lines) < 3 {
			return fmt.Errorf("%d lines: %s", len(lines), b)
		}
		return nil
	})
	last := lines[len(lines)-3:]
	for i, want := range []struct {
		path   string
		status float64
	}{{"/public/page", 200}, {"/orders/1", 403}} {
		l := last[i+1]
		if l["path"] != want.path || l["status"] != want.status || l["source_identity"] != "" ||
			!strings.HasPrefix(l["source_address"].(string), "127.0.0.1:") || l["upstream"] != pm.app.addr {
			t.Errorf("line %v, want path %s status %v from no identity", l, want.path, want.status)
		}
	}
}

// jsonLines decodes an access log: one JSON object a line.
func jsonLines(b []byte) ([]map[string]any, error) {
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			return nil, fmt.Errorf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines, nil
}
