package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/pathnorm"
	meshv1 "minimesh/proto/mesh/v1"
)

// recorder is a real HTTP app on loopback that records the raw request
// target of every request it receives, by X-Request-Id.
type recorder struct {
	addr string
	port uint32
	mu   sync.Mutex
	got  map[string]string // request id -> RequestURI
	all  []string
}

func startRecorder(t *testing.T) *recorder {
	t.Helper()
	l := listen(t)
	rec := &recorder{addr: l.Addr().String(), port: portOf(t, l.Addr().String()), got: map[string]string{}}
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
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
	pm := &policyMesh{meshd: controlplanetest.Start(t, controlplane.Config{}), app: startRecorder(t)}
	rev := applyDocs(t, pm.meshd, serviceYAML("api", httpPortYAML(pm.app.port), idOf("api").String())+docs)
	pm.api = startTraffic(t, pm.meshd, trafficOpts{service: "api", app: pm.app.addr})
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
	c  *tls.Conn
	br *bufio.Reader
}

func (rc *rawConn) do(t *testing.T, raw string) (*http.Response, string, error) {
	t.Helper()
	if rc.c == nil {
		rc.c = rc.pm.dialAPI(t)
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
	rc := &rawConn{pm: pm}
	counts := map[int]int{}
	for i, v := range variants {
		id := "corpus-" + strconv.Itoa(i)
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
		case resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusForbidden:
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
	if counts[200] == 0 || counts[403] < 50 || counts[400] < 50 {
		t.Errorf("status counts %v: expected many of each of 200, 400 and 403", counts)
	}
	t.Logf("%d variants: %v", len(variants), counts)
	if n := pm.api.counterValue(t, "minimesh_proxy_authz_decisions_total", "decision", "deny"); n < 50 {
		t.Errorf("authz deny decisions counted: %v", n)
	}
}

// counterValue sums a counter family of the proxy's registry, filtered by
// one label.
func (h *trafficProxy) counterValue(t *testing.T, name, label, value string) float64 {
	t.Helper()
	body, err := fetchBody("http://" + h.admin + "/metrics")
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

var errNoStatus = errors.New("no status")

var _ = meshv1.SyncState_SYNC_STATE_SYNCED
