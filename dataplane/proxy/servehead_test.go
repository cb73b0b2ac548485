package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"minimesh/certs"
)

// startPublicPolicy runs a Public in front of appAddr with metrics of its
// own and pol in force, and returns it with a client TLS config.
func startPublicPolicy(t *testing.T, appAddr, pol string) (*Public, *Metrics, *tls.Config, string) {
	t.Helper()
	cert, certPEM, keyPEM := selfSigned(t)
	certFile, keyFile := writeCert(t, t.TempDir(), certPEM, keyPEM)
	fc, err := certs.NewFileCertificate(certs.FileCertificateConfig{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	_, metrics := registeredMetrics(t)
	log, _ := newLogger()
	ln := listenLocal(t)
	pub, err := NewPublic(PublicConfig{Listener: ln, App: appAddr, Certificate: fc, Metrics: metrics, Logger: log,
		Limits: Limits{Drain: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if pol != "" {
		p, err := CompilePolicy(PolicyConfig{Service: "api"}, snapshot(t, pol), nil)
		if err != nil {
			t.Fatal(err)
		}
		pub.SetPolicy(p)
	}
	run(t, pub)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return pub, metrics, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}}, ln.Addr().String()
}

func servedFromHead(t *testing.T, m *Metrics, listener string) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.fromHead.WithLabelValues(listener).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// answerOf sends head on a new TLS connection to addr and returns the
// answer's bytes as they came, its Date field's line taken out.
func answerOf(t *testing.T, addr string, cfg *tls.Config, head string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg.Clone())
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

// A request served from its head reaches the app as the same request sent
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
	_, metrics, cfg, addr := startPublicPolicy(t, a.addr(), `
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: pub}
spec:
  service: api
  rules:
  - {action: deny, paths: [{prefix: /admin}]}
  - {action: allow, paths: [{prefix: /}], methods: [GET]}
`)
	for _, tc := range []struct {
		name, target, fields string
		fromHead             bool
	}{
		{"plain", "/hello?x=1", "User-Agent: t\r\nAccept: */*\r\n", true},
		{"names in any case, values trimmed", "/a", "user-agent:\tcurl/8.5 \r\nACCEPT-ENCODING:gzip, br\r\ncookie: a=1; b=2\r\nIf-None-Match: \"x\"\r\n", true},
		{"a path the policy normalizes", "/a//b/./c", "Accept: */*\r\n", true},
		{"a query that cleans to nothing", "/q?a;b", "", true},
		{"an answer with 1xx and hop-by-hop fields", "/early", "Accept: */*\r\n", true},
		{"no fields but Host", "/", "", true},
		{"an X-Request-Id of the client's", "/id", "X-Request-Id: mine\r\n", false},
		{"a client's forwarding header", "/fwd", "X-Forwarded-For: 6.6.6.6\r\n", false},
		{"an underscore", "/u", "X_Mesh_Peer_Id: spiffe://x\r\n", false},
		{"a routing override", "/o", "X-HTTP-Method-Override: DELETE\r\n", false},
		{"a field twice", "/twice", "Accept: a\r\nAccept: b\r\n", false},
		{"a field the proxy does not know", "/x", "X-Custom: 1\r\n", false},
		{"a denied path", "/admin/x", "", false},
		{"a path refused", "/a/%2e%2e/b", "", false},
		{"a bare question mark", "/q?", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var answers [2]string
			var heads [2]wireHead
			for i, extra := range []string{"", "Connection: keep-alive\r\n"} {
				before := servedFromHead(t, metrics, ListenerPublic)
				answers[i] = answerOf(t, addr, cfg, "GET "+tc.target+" HTTP/1.1\r\nHost: shop.example:443\r\n"+tc.fields+extra+"\r\n")
				got := servedFromHead(t, metrics, ListenerPublic) - before
				want := 0.0
				if i == 0 && tc.fromHead {
					want = 1
				}
				if got != want {
					t.Fatalf("way %d: %v requests served from their heads, want %v", i, got, want)
				}
				if strings.Contains(answers[i], " 403 ") || strings.Contains(answers[i], " 400 ") {
					continue // refused before the app
				}
				select {
				case s := <-a.heads:
					heads[i] = parseWireHead(t, s)
				case <-time.After(5 * time.Second):
					t.Fatal("the app read no request")
				}
			}
			if answers[0] != answers[1] {
				t.Errorf("the client read\nfrom the head: %q\nthe usual way: %q", answers[0], answers[1])
			}
			h, u := heads[0], heads[1]
			for _, w := range []*wireHead{&h, &u} {
				if ids := w.fields[HeaderRequestID]; w.line != "" && (len(ids) != 1 || !validRequestID(ids[0])) {
					t.Errorf("X-Request-Id %q", ids)
				}
				delete(w.fields, HeaderRequestID) // each way makes its own
			}
			if h.line != u.line || !maps.EqualFunc(h.fields, u.fields, slices.Equal) {
				t.Errorf("the app read\nfrom the head: %q %q\nthe usual way: %q %q", h.line, h.fields, u.line, u.fields)
			}
			if tc.fromHead && (h.fields["X-Forwarded-Proto"] == nil || h.fields["Host"] == nil) {
				t.Errorf("the app read %q: no Host or forwarding headers", h.fields)
			}
		})
	}
}
