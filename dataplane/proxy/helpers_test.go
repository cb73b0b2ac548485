package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

const (
	webID = "spiffe://minimesh.local/ns/default/sa/web"
	apiID = "spiffe://minimesh.local/ns/default/sa/api"
)

// checkLeaks registers goleak as the test's last cleanup, so it runs after
// every part has been stopped and every client closed.
func checkLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// logBuffer collects log lines so tests can check what was logged.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// seen is what the app received for one request.
type seen struct {
	Method string      `json:"method"`
	Path   string      `json:"path"`
	Query  string      `json:"query"`
	Host   string      `json:"host"`
	Header http.Header `json:"header"`
}

// app is a real HTTP server on loopback that echoes what it received as
// JSON and counts requests.
type app struct {
	*httptest.Server
	hits atomic.Int64
}

func newApp(t testing.TB) *app {
	t.Helper()
	a := &app{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(seen{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host, Header: r.Header})
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *app) addr() string { return a.Listener.Addr().String() }

func listenLocal(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// run starts part.Run and, at cleanup, cancels it and checks it returned nil.
func run(t testing.TB, part interface{ Run(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- part.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
	})
}

// mesh is one trust domain with its CA and the two workloads' sources.
type mesh struct {
	clock  *certstest.Clock // the CA's: move it back to issue expired SVIDs
	ca     *certs.CA
	bundle *certs.BundleSource
	web    *certs.SVIDSource
	api    *certs.SVIDSource
}

func newMesh(t testing.TB) *mesh {
	t.Helper()
	clock := certstest.NewClock(time.Now())
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("minimesh.local"), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	m := &mesh{clock: clock, ca: ca, bundle: certs.NewBundleSource(ca.Bundle()),
		web: certs.NewSVIDSource(nil), api: certs.NewSVIDSource(nil)}
	m.web.Set(certstest.SVID(t, ca, webID))
	m.api.Set(certstest.SVID(t, ca, apiID))
	return m
}

// expiredSVID issues an SVID for id that expired an hour ago, from the
// mesh's own CA, and a source whose clock still considers it valid (so a
// client presents it).
func (m *mesh) expiredSVID(t testing.TB, id string) *certs.SVIDSource {
	t.Helper()
	now := m.clock.Now()
	m.clock.Set(now.Add(-2 * time.Hour))
	svid, err := m.ca.IssueSVID(spiffeid.RequireFromString(id), 30*time.Minute)
	m.clock.Set(now)
	if err != nil {
		t.Fatal(err)
	}
	src := certs.NewSVIDSource(certstest.NewClock(now.Add(-time.Hour - 45*time.Minute)))
	src.Set(svid)
	return src
}

// registeredMetrics is a Metrics registered on a registry of its own, for
// tests that read the series back.
func registeredMetrics(t testing.TB) (*prometheus.Registry, *Metrics) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return reg, m
}

func newMetrics(t testing.TB) *Metrics {
	t.Helper()
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startInbound runs an Inbound for api in front of a.
func startInbound(t testing.TB, m *mesh, a *app, metrics *Metrics, ln net.Listener) *Inbound {
	t.Helper()
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: ln, App: a.addr(), SVID: m.api, Bundle: m.bundle,
		Metrics: metrics, Logger: log, Limits: Limits{Drain: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	return in
}

// mtlsClient is an HTTP client speaking mTLS as svid to a server that must
// be want. protos picks HTTP/1.1 or HTTP/2.
func mtlsClient(t testing.TB, svid x509svid.Source, bundle x509bundle.Source, want string, h2 bool) *http.Client {
	t.Helper()
	cfg := certs.MTLSClientConfig(svid, bundle, certs.AuthorizeID(spiffeid.RequireFromString(want)), certs.TLSOptions{})
	return tlsClient(t, cfg, h2)
}

func tlsClient(t testing.TB, cfg *tls.Config, h2 bool) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2}
	if !h2 {
		cfg.NextProtos = []string{"http/1.1"}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func plainClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// get sends a GET with extra headers and decodes the app's echo.
func get(t testing.TB, c *http.Client, url string, header http.Header) (*http.Response, seen) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var s seen
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("decode %q: %v", body, err)
		}
	} else {
		s.Path = string(body) // for error messages
	}
	return resp, s
}

// keepAlive is one HTTP/1.1 keep-alive connection used by hand, so a test
// knows exactly which connection carries a request.
type keepAlive struct {
	conn *tls.Conn
	r    *bufio.Reader
}

func dialKeepAlive(t testing.TB, addr string, cfg *tls.Config) *keepAlive {
	t.Helper()
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &keepAlive{conn: c, r: bufio.NewReader(c)}
}

func (k *keepAlive) do(t testing.TB, path string) (int, seen) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://api"+path, nil)
	if err := req.Write(k.conn); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(k.r, req)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	var s seen
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if resp.Close {
		t.Fatalf("server asked to close the keep-alive connection")
	}
	return resp.StatusCode, s
}

func (k *keepAlive) serial() string {
	return k.conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

func serialOf(svid *x509svid.SVID) string { return svid.Certificates[0].SerialNumber.Text(16) }

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

func handshakeFailures(t testing.TB, m *Metrics, listener, reason string) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.handshakeFailures.WithLabelValues(listener, reason).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

func requests(t testing.TB, m *Metrics, listener, class string) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.requests.WithLabelValues(listener, class).Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// selfSigned makes a self-signed certificate for 127.0.0.1 and returns it
// with its PEM certificate and key.
func selfSigned(t testing.TB) (*x509.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "app.example"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// writeCert writes a certificate and key (0600) into dir, each atomically.
func writeCert(t testing.TB, dir string, certPEM, keyPEM []byte) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := certs.WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteFileAtomic(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// eventually polls cond until it holds; the bound is generous because it
// only stops a broken test, it measures nothing.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startPublic runs a Public listener in front of the app at appAddr with a
// self-signed certificate and returns it with a TLS config that trusts it.
func startPublic(t testing.TB, appAddr string) (net.Listener, *tls.Config) {
	t.Helper()
	return startPublicWith(t, PublicConfig{App: appAddr, Metrics: newMetrics(t)})
}

// roundTrip sends one request through c and returns the status and body.
func roundTrip(t *testing.T, c http.RoundTripper, method, url string, body io.Reader) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
