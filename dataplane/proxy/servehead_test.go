package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
)

// startPublicPolicy runs a Public in front of appAddr with metrics of its
// own and pol in force, and returns it with a client TLS config (HTTP/1.1)
// and its address.
func startPublicPolicy(t *testing.T, appAddr, pol string) (*Public, *Metrics, *tls.Config, string) {
	t.Helper()
	_, metrics := registeredMetrics(t)
	pub, cfg := newPublicSelfSigned(t, PublicConfig{App: appAddr, Metrics: metrics, Limits: Limits{Drain: 5 * time.Second}})
	if pol != "" {
		p, err := CompilePolicy(PolicyConfig{Service: "api"}, snapshot(t, pol), nil)
		if err != nil {
			t.Fatal(err)
		}
		pub.SetPolicy(p)
	}
	run(t, pub)
	cfg.NextProtos = []string{"http/1.1"}
	return pub, metrics, cfg, pub.cfg.Listener.Addr().String()
}

func servedFromHead(t *testing.T, m *Metrics, listener string) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.fromHead.WithLabelValues(listener).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// answerOf sends head on a new TLS connection to addr (plain TCP when cfg
// is nil) and returns the answer's bytes as they came, its Date field's
// line taken out.
func answerOf(t *testing.T, addr string, cfg *tls.Config, head string) string {
	t.Helper()
	var c net.Conn
	var err error
	if cfg != nil {
		c, err = tls.Dial("tcp", addr, cfg.Clone())
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v (read %q)", head, err, raw.String())
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 200 {
			break
		}
	}
	var out []string
	for _, l := range strings.SplitAfter(raw.String(), "\r\n") {
		if !strings.HasPrefix(l, "Date: ") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// At the public port, a request served from its head reaches the app as the same request sent
// the usual way does, and its answer reaches the client the same, off
// the wire on both sides. The usual way is forced by adding "Connection:
// keep-alive", which h1 never offers as a head and the usual way drops
// (hop-by-hop). The counter of requests served from their heads says which
// way each went, so that the comparison is never of the usual way with
// itself: the first cases must be served from their heads, the last ones
// must be declined (and then served the usual way, with nothing written
// twice).
func TestHeadServedMatchesUsualWay(t *testing.T) {
	checkLeaks(t)
	a := startHeadApp(t)
	_, metrics, cfg, addr := startPublicPolicy(t, a.addr(), headPolicy)
	compareWays(t, a, metrics, ListenerPublic, addr, cfg, append(commonHeadCases,
		headCase{"an X-Request-Id of the client's", "/id", "X-Request-Id: mine\r\n", false, ""},
		headCase{"a client's forwarding header", "/fwd", "X-Forwarded-For: 6.6.6.6\r\n", false, ""},
		headCase{"an X-Mesh-Target", "/t", "X-Mesh-Target: http/" + portOf(t, a.addr()) + "\r\n", false, ""},
	))
}

// The inbound serves a peer's common GET from its head as the usual way
// would, with the fields a peer's outbound adds: its X-Request-Id is kept,
// its X-Mesh-Target picks the port and goes no further; the app gets
// X-Mesh-Peer-Id. The caller's identity decides (a path denied to this
// caller goes the usual way, which refuses it).
func TestInboundHeadServedMatchesUsualWay(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	a := startHeadApp(t)
	_, metrics := registeredMetrics(t)
	log, _ := newLogger()
	ln := listenLocal(t)
	in, err := NewInbound(InboundConfig{Listener: ln, App: a.addr(), SVID: m.api, Bundle: m.bundle,
		Metrics: metrics, Logger: log, Limits: Limits{Drain: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := CompilePolicy(PolicyConfig{Service: "api"}, snapshot(t, headPolicy+`  - {action: deny, from: ["spiffe://minimesh.local/ns/default/sa/web"], paths: [{prefix: /not-web}]}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	in.SetPolicy(pol)
	run(t, in)
	cfg := certs.MTLSClientConfig(m.web, m.bundle, certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{})
	cfg.NextProtos = []string{"http/1.1"}
	compareWays(t, a, metrics, ListenerInbound, ln.Addr().String(), cfg, append(commonHeadCases,
		headCase{"the caller's X-Request-Id", "/id", "X-Request-Id: req-1\r\n", true, "req-1"},
		headCase{"an X-Mesh-Target", "/t", "X-Mesh-Target: http/" + portOf(t, a.addr()) + "\r\n", true, ""},
		headCase{"an X-Mesh-Target and an X-Request-Id", "/t", "x-mesh-target: http/" + portOf(t, a.addr()) + "\r\nx-request-id: a.b:c\r\n", true, "a.b:c"},
		headCase{"an X-Request-Id refused", "/id", "X-Request-Id: a b\r\n", false, ""},
		headCase{"two X-Request-Ids", "/id", "X-Request-Id: a\r\nX-Request-Id: b\r\n", false, ""},
		headCase{"an X-Mesh-Target of no port", "/t", "X-Mesh-Target: http/1\r\n", false, ""},
		headCase{"a bad X-Mesh-Target", "/t", "X-Mesh-Target: 80\r\n", false, ""},
		headCase{"a path denied to this caller", "/not-web", "", false, ""},
		headCase{"a caller's forwarding header", "/fwd", "X-Forwarded-For: 6.6.6.6\r\n", false, ""},
	))
}

// The outbound serves the app's common GET from its head as the usual way
// would: the remote inbound reads the same head, and the app the same
// answer. A route that matches a header other than Host sends a request
// to another port (X-Mesh-Target says which): the head's fields are made
// into the map the route reads.
func TestOutboundHeadServedMatchesUsualWay(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	remote := startHeadRemote(t, m, false)
	tab, err := CompileTable(TableConfig{}, snapshot(t, `
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["`+apiID+`"]
---
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: cap}
spec:
  ports: [{name: http, port: 8080, protocol: http}, {name: canary, port: 8081, protocol: http}]
  servingIdentities: ["`+apiID+`"]
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: canary}
spec:
  service: cap
  matches: [{headers: [{name: accept, exact: canary}]}]
  backends: [{service: cap, port: 8081}]
`, "default/api "+remote.addr()+" "+apiID, "default/cap "+remote.addr()+" "+apiID))
	if err != nil {
		t.Fatal(err)
	}
	apiLn, capLn := listenLocal(t), listenLocal(t)
	log, _ := newLogger()
	_, metrics := registeredMetrics(t)
	o, err := NewOutbound(OutboundConfig{Upstreams: []Upstream{{Name: "api", Listener: apiLn}, {Name: "cap:8080", Listener: capLn}},
		SVID: m.web, Bundle: m.bundle, Logger: log, Metrics: metrics, Limits: Limits{Drain: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	o.Install(tab)
	run(t, o)
	compareWays(t, remote, metrics, ListenerOutbound, apiLn.Addr().String(), nil, []headCase{
		{"plain", "/hello?x=1", "User-Agent: t\r\nAccept: */*\r\n", true, ""},
		{"names in any case, values trimmed", "/a", "user-agent:\tcurl/8.5 \r\nACCEPT-ENCODING:gzip, br\r\ncookie: a=1; b=2\r\n", true, ""},
		{"an empty User-Agent", "/ua", "User-Agent:\r\nAccept: */*\r\n", true, ""},
		{"the app's X-Request-Id", "/id", "x-request-id: app-1\r\n", true, "app-1"},
		{"a path kept as spelled", "/a//b/./c?q=a;b", "", true, ""},
		{"no fields but Host", "/", "", true, ""},
		{"an X-Request-Id refused", "/id", "X-Request-Id: a b\r\n", false, ""},
		{"a forwarding header", "/fwd", "X-Forwarded-For: 6.6.6.6\r\n", false, ""},
		{"a mesh header", "/m", "X-Mesh-Target: http/22\r\n", false, ""},
		{"a field the proxy does not know", "/x", "X-Custom: 1\r\n", false, ""},
	})
	compareWays(t, remote, metrics, ListenerOutbound, capLn.Addr().String(), nil, []headCase{
		{"a route reading a header", "/canary", "Accept: canary\r\n", true, ""},
		{"a route reading a header, not matched", "/canary", "Accept: */*\r\nUser-Agent: t\r\n", true, ""},
	})
	var d dto.Metric
	if err := metrics.outRequests.WithLabelValues("api", "default", destService, "2xx").Write(&d); err != nil || d.GetCounter().GetValue() != 20 {
		t.Errorf("outbound requests to api: %v (%v), want 20: both ways count", d.GetCounter().GetValue(), err)
	}
}

const headPolicy = `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: pub}
spec:
  service: api
  rules:
  - {action: deny, paths: [{prefix: /admin}]}
  - {action: allow, paths: [{prefix: /}], methods: [GET]}
`

type headCase struct {
	name, target, fields string
	fromHead             bool
	id                   string // the X-Request-Id the app reads; "": a new one
}

// commonHeadCases are served from their heads (fromHead) or declined alike
// at both listeners.
var commonHeadCases = []headCase{
	{"plain", "/hello?x=1", "User-Agent: t\r\nAccept: */*\r\n", true, ""},
	{"names in any case, values trimmed", "/a", "user-agent:\tcurl/8.5 \r\nACCEPT-ENCODING:gzip, br\r\ncookie: a=1; b=2\r\nIf-None-Match: \"x\"\r\n", true, ""},
	{"a path the policy normalizes", "/a//b/./c", "Accept: */*\r\n", true, ""},
	{"a query that cleans to nothing", "/q?a;b", "", true, ""},
	{"an answer with 1xx and hop-by-hop fields", "/early", "Accept: */*\r\n", true, ""},
	{"no fields but Host", "/", "", true, ""},
	{"an underscore", "/u", "X_Mesh_Peer_Id: spiffe://x\r\n", false, ""},
	{"a routing override", "/o", "X-HTTP-Method-Override: DELETE\r\n", false, ""},
	{"a field twice", "/twice", "Accept: a\r\nAccept: b\r\n", false, ""},
	{"a field the proxy does not know", "/x", "X-Custom: 1\r\n", false, ""},
	{"a mesh header", "/m", "X-Mesh-Peer-Id: spiffe://minimesh.local/ns/default/sa/admin\r\n", false, ""},
	{"a denied path", "/admin/x", "", false, ""},
	{"a path refused", "/a/%2e%2e/b", "", false, ""},
	{"a bare question mark", "/q?", "", false, ""},
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// sortedFields is an answer with its fields sorted: a refusal's fields
// come from a header map, in any order.
func sortedFields(answer string) string {
	head, body, _ := strings.Cut(answer, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	slices.Sort(lines[1:])
	return strings.Join(lines, "\r\n") + "\r\n\r\n" + body
}

// compareWays sends each case twice to addr: as it is, and with
// "Connection: keep-alive" (the usual way), and compares what the app and
// the client read.
func compareWays(t *testing.T, a *headRemote, metrics *Metrics, listener, addr string, cfg *tls.Config, cases []headCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var answers [2]string
			var heads [2]wireHead
			for i, extra := range []string{"", "Connection: keep-alive\r\n"} {
				before := servedFromHead(t, metrics, listener)
				answers[i] = answerOf(t, addr, cfg, "GET "+tc.target+" HTTP/1.1\r\nHost: shop.example:443\r\n"+tc.fields+extra+"\r\n")
				got := servedFromHead(t, metrics, listener) - before
				want := 0.0
				if i == 0 && tc.fromHead {
					want = 1
				}
				if got != want {
					t.Fatalf("way %d: %v requests served from their heads, want %v", i, got, want)
				}
				if !strings.HasPrefix(answers[i], "HTTP/1.1 200 ") && !strings.HasPrefix(answers[i], "HTTP/1.1 103 ") {
					continue // refused before the app
				}
				select {
				case s := <-a.heads:
					heads[i] = parseWireHead(t, s)
				case <-time.After(5 * time.Second):
					t.Fatal("the app read no request")
				}
			}
			if sortedFields(answers[0]) != sortedFields(answers[1]) {
				t.Errorf("the client read\nfrom the head: %q\nthe usual way: %q", answers[0], answers[1])
			}
			h, u := heads[0], heads[1]
			for _, w := range []*wireHead{&h, &u} {
				ids := w.fields[HeaderRequestID]
				if w.line != "" && (len(ids) != 1 || !validRequestID(ids[0]) || tc.id != "" && ids[0] != tc.id) {
					t.Errorf("X-Request-Id %q, want one (%q)", ids, tc.id)
				}
				if tc.id == "" {
					delete(w.fields, HeaderRequestID) // each way makes its own
				}
			}
			if h.line != u.line || !maps.EqualFunc(h.fields, u.fields, slices.Equal) {
				t.Errorf("the app read\nfrom the head: %q %q\nthe usual way: %q %q", h.line, h.fields, u.line, u.fields)
			}
			if tc.fromHead && h.fields["Host"] == nil {
				t.Errorf("the app read %q: no Host", h.fields)
			}
		})
	}
}
