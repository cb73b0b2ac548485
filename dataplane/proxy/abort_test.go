package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"minimesh/certs"
	"minimesh/dataplane/accesslog"
	"minimesh/dataplane/applink/applinktest"
)

// A response the proxy aborts because the app broke off mid-body
// (http.ErrAbortHandler) is logged, with the status sent and the flag UC,
// and counted in the class "aborted", at the inbound (HTTP/1.1 and HTTP/2
// callers) and at the public port; the next request is served as usual.
func TestAbortedResponseLoggedAndCounted(t *testing.T) {
	m := newMesh(t)
	a := applinktest.NewHostileApp(t)
	metrics := newMetrics(t)
	var out logBuffer
	al := accesslog.New(accesslog.Config{Output: &out})
	log, _ := newLogger()
	inLn := listenLocal(t)
	in, err := NewInbound(InboundConfig{Listener: inLn, App: a.Addr(), Service: "api", SVID: m.api, Bundle: m.bundle,
		AccessLog: al, Metrics: metrics, Logger: log, Limits: Limits{Drain: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := CompilePolicy(PolicyConfig{Service: "api"}, snapshot(t, `
apiVersion: minimesh.io/v1alpha1
kind: AccessLog
metadata: {name: api-log}
spec: {service: api, enabled: true, fields: [method, path, status, upstream, response_flags]}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	in.SetPolicy(pol)
	run(t, in)
	pubLn, pubTLS := startPublicWith(t, PublicConfig{App: a.Addr(), AccessLog: al, Metrics: metrics})

	for i, tc := range []struct {
		name, listener string
		client         *http.Client
		url            string
	}{
		{"inbound HTTP/1.1", ListenerInbound, mtlsClient(t, m.web, m.bundle, apiID, false), "https://" + inLn.Addr().String()},
		{"inbound HTTP/2", ListenerInbound, mtlsClient(t, m.web, m.bundle, apiID, true), "https://" + inLn.Addr().String()},
		{"public", ListenerPublic, tlsClient(t, pubTLS, false), "https://" + pubLn.Addr().String()},
	} {
		before := requests(t, metrics, tc.listener, "aborted")
		// The client sees the response fail: at once when the abort came
		// before the proxy's buffered head went out, else mid-body.
		if resp, err := tc.client.Get(tc.url + "/close-mid-body"); err == nil {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err == nil {
				t.Fatalf("%s: %d, %d bytes, %v: want 200 and a body that fails", tc.name, resp.StatusCode, len(b), err)
			}
		}
		eventually(t, tc.name+": the aborted response to be counted", func() bool {
			return requests(t, metrics, tc.listener, "aborted") == before+1
		})
		var line map[string]any
		eventually(t, tc.name+": the aborted response's access-log line", func() bool {
			for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["path"] == "/close-mid-body" && m["response_flags"] != nil {
					line = m
				}
			}
			n := strings.Count(out.String(), `"response_flags"`)
			return line != nil && n == i+1
		})
		if line["status"] != float64(200) || line["response_flags"] != "UC" || line["upstream"] != a.Addr() {
			t.Errorf("%s: access-log line %v, want status 200, response_flags UC, upstream %s", tc.name, line, a.Addr())
		}
		resp, err := tc.client.Get(tc.url + "/ok?id=7")
		if err != nil {
			t.Fatalf("%s: next request: %v", tc.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "ok 7" {
			t.Errorf("%s: next request: %d %q", tc.name, resp.StatusCode, b)
		}
	}
	if got := inboundRequests(t, metrics, "web", "api", "aborted"); got != 2 {
		t.Errorf("inbound_requests_total{source_service=web,class=aborted} = %v, want 2", got)
	}
	if n := strings.Count(out.String(), `"response_flags"`); n != 3 {
		t.Errorf("%d lines flagged, want 3 (only the aborted responses):\n%s", n, out.String())
	}
}

func inboundRequests(t testing.TB, m *Metrics, src, dst, class string) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.inRequests.WithLabelValues(src, "default", dst, "default", class).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// startPublicWith runs a Public listener configured as cfg (Listener,
// Certificate and Logger filled in) with a self-signed certificate, and
// returns it with a TLS config that trusts it.
func startPublicWith(t testing.TB, cfg PublicConfig) (net.Listener, *tls.Config) {
	t.Helper()
	pub, tlsCfg := newPublicSelfSigned(t, cfg)
	run(t, pub)
	return pub.cfg.Listener, tlsCfg
}

// newPublicSelfSigned builds a Public as cfg says (Listener, Certificate
// and Logger filled in) with a self-signed certificate, and a TLS config
// that trusts it; the caller runs it.
func newPublicSelfSigned(t testing.TB, cfg PublicConfig) (*Public, *tls.Config) {
	t.Helper()
	cert, certPEM, keyPEM := selfSigned(t)
	certFile, keyFile := writeCert(t, t.TempDir(), certPEM, keyPEM)
	fc, err := certs.NewFileCertificate(certs.FileCertificateConfig{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger()
	cfg.Listener, cfg.Certificate, cfg.Logger = listenLocal(t), fc, log
	pub, err := NewPublic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return pub, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
}
