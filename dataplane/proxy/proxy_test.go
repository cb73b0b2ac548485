package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/dataplane/applink"
)

func startOutbound(t testing.TB, m *mesh, remote string, id string, metrics *Metrics) (net.Listener, *logBuffer) {
	t.Helper()
	log, logs := newLogger()
	ln := listenLocal(t)
	out, err := NewOutbound(OutboundConfig{
		Upstreams: []Upstream{{Name: "api", Listener: ln, Remote: remote, ID: spiffeid.RequireFromString(id)}},
		SVID:      m.web, Bundle: m.bundle, Metrics: metrics, Logger: log,
		Limits: Limits{Drain: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	run(t, out)
	return ln, logs
}

func TestMeshRequestCarriesCallerID(t *testing.T) {
	t.Setenv(EnvMeshLink, MeshLinkH2) // HTTP/2's one connection; HTTP/1.1's pool: h1link_test.go
	checkLeaks(t)
	m, a, metrics := newMesh(t), newApp(t), newMetrics(t)
	inLn := &countingListener{Listener: listenLocal(t)}
	startInbound(t, m, a, metrics, inLn)
	outLn, _ := startOutbound(t, m, inLn.Addr().String(), apiID, metrics)
	c := plainClient(t)
	url := "http://" + outLn.Addr().String()

	resp, s := get(t, c, url+"/hello?q=1", http.Header{
		"X-Mesh-Peer-Id":          {"spiffe://minimesh.local/ns/kube-system/sa/admin"},
		"X-Mesh-Authz":            {"allow"},
		"x-mesh-lowercase":        {"sneaky"},
		"X-Forwarded-Client-Cert": {"By=spiffe://minimesh.local/ns/default/sa/api"},
		"X-App":                   {"kept"},
	})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, s.Path)
	}
	if got := s.Header.Values(HeaderPeerID); !slices.Equal(got, []string{webID}) {
		t.Errorf("app saw %s %q, want exactly [%s]", HeaderPeerID, got, webID)
	}
	for k := range s.Header {
		if applink.HasPrefixFold(k, "X-Mesh-") && k != HeaderPeerID || strings.EqualFold(k, "X-Forwarded-Client-Cert") {
			t.Errorf("app saw client-sent header %s", k)
		}
	}
	if s.Header.Get("X-App") != "kept" || s.Path != "/hello" {
		t.Errorf("app saw path %q, X-App %q", s.Path, s.Header.Get("X-App"))
	}

	// Requests multiplex over the one HTTP/2 connection already open, also
	// after web's SVID rotated (established connections are kept).
	m.web.Set(certstest.SVID(t, m.ca, webID))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			resp, err := c.Get(url + "/parallel")
			if err != nil {
				errs <- err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs <- errors.New(resp.Status)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("parallel request: %v", err)
	}
	if n := inLn.accepted.Load(); n != 1 {
		t.Errorf("inbound accepted %d connections for 21 requests, want 1 (HTTP/2, long-lived)", n)
	}
	if got := requests(t, metrics, ListenerOutbound, "2xx"); got != 21 {
		t.Errorf("outbound 2xx = %v, want 21", got)
	}
	if got := requests(t, metrics, ListenerInbound, "2xx"); got != 21 {
		t.Errorf("inbound 2xx = %v, want 21", got)
	}
	// The outbound's own series, by destination service.
	if got := counterValue(t, metrics.outRequests.WithLabelValues("api", "default", destService, "2xx")); got != 21 {
		t.Errorf("outbound 2xx to api.default = %v, want 21", got)
	}
	var d dto.Metric
	if err := metrics.outDuration.WithLabelValues("api", "default", destService).(prometheus.Histogram).Write(&d); err != nil || d.GetHistogram().GetSampleCount() != 21 {
		t.Errorf("outbound durations to api.default: %v samples, %v", d.GetHistogram().GetSampleCount(), err)
	}
}

func TestInboundServesHTTP1AndHTTP2Peers(t *testing.T) {
	checkLeaks(t)
	m, a := newMesh(t), newApp(t)
	ln := listenLocal(t)
	startInbound(t, m, a, newMetrics(t), ln)
	for _, tc := range []struct {
		name  string
		h2    bool
		major int
	}{{"HTTP/1.1", false, 1}, {"HTTP/2", true, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			c := mtlsClient(t, m.web, m.bundle, apiID, tc.h2)
			resp, s := get(t, c, "https://"+ln.Addr().String()+"/x", http.Header{HeaderPeerID: {"spiffe://evil.example/x"}})
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != tc.major {
				t.Fatalf("status %d over %s, want 200 over HTTP/%d", resp.StatusCode, resp.Proto, tc.major)
			}
			if got := s.Header.Values(HeaderPeerID); !slices.Equal(got, []string{webID}) {
				t.Errorf("app saw %s %q, want [%s]", HeaderPeerID, got, webID)
			}
		})
	}
}

func TestInboundRefusesPeers(t *testing.T) {
	checkLeaks(t)
	m, a, metrics := newMesh(t), newApp(t), newMetrics(t)
	ln := listenLocal(t)
	startInbound(t, m, a, metrics, ln)

	other := certstest.NewCA(t, "other.local")
	otherSrc := certs.NewSVIDSource(nil)
	otherSrc.Set(certstest.SVID(t, other, "spiffe://other.local/ns/default/sa/web"))
	rogue := certstest.NewCA(t, "minimesh.local") // our trust domain's name, another root
	rogueSrc := certs.NewSVIDSource(nil)
	rogueSrc.Set(certstest.SVID(t, rogue, webID))

	apiAuth := certs.AuthorizeID(spiffeid.RequireFromString(apiID))
	for _, tc := range []struct {
		name   string
		config func() *tls.Config
		reason string
	}{
		{"no client certificate", func() *tls.Config {
			cfg := certs.MTLSClientConfig(m.web, m.bundle, apiAuth, certs.TLSOptions{})
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return &tls.Certificate{}, nil // sends none
			}
			return cfg
		}, ReasonNoClientCert},
		{"another trust domain", func() *tls.Config {
			return certs.MTLSClientConfig(otherSrc, m.bundle, apiAuth, certs.TLSOptions{})
		}, ReasonUntrusted},
		{"our trust domain name from another CA", func() *tls.Config {
			return certs.MTLSClientConfig(rogueSrc, m.bundle, apiAuth, certs.TLSOptions{})
		}, ReasonUntrusted},
		{"expired certificate", func() *tls.Config {
			return certs.MTLSClientConfig(m.expiredSVID(t, webID), m.bundle, apiAuth, certs.TLSOptions{})
		}, ReasonExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := handshakeFailures(t, metrics, ListenerInbound, tc.reason)
			err := exchange(ln.Addr().String(), tc.config())
			if err == nil {
				t.Fatal("request succeeded, want the handshake refused")
			}
			t.Logf("client error: %v", err)
			eventually(t, "failure counted as "+tc.reason, func() bool {
				return handshakeFailures(t, metrics, ListenerInbound, tc.reason) == before+1
			})
		})
	}
	if n := a.hits.Load(); n != 0 {
		t.Errorf("app got %d requests from refused peers", n)
	}
	// The same listener still serves a valid peer.
	resp, _ := get(t, mtlsClient(t, m.web, m.bundle, apiID, false), "https://"+ln.Addr().String()+"/", nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("valid peer got %d", resp.StatusCode)
	}
}

// exchange makes one connection, sends one request and reads the answer;
// with TLS 1.3 a client learns that the server refused its certificate
// only when it reads.
func exchange(addr string, cfg *tls.Config) error {
	cfg.NextProtos = []string{"http/1.1"}
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: api\r\n\r\n"); err != nil {
		return err
	}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil {
		return err
	}
	return nil
}

func TestInboundOwnSVIDExpiryRefusesNewHandshakesOnly(t *testing.T) {
	checkLeaks(t)
	m, a, metrics := newMesh(t), newApp(t), newMetrics(t)
	clock := certstest.NewClock(time.Now())
	m.api = certs.NewSVIDSource(clock)
	m.api.Set(certstest.SVID(t, m.ca, apiID))
	ln := listenLocal(t)
	startInbound(t, m, a, metrics, ln)
	cfg := certs.MTLSClientConfig(m.web, m.bundle, certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{})

	ka := dialKeepAlive(t, ln.Addr().String(), cfg)
	if code, _ := ka.do(t, "/before"); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	clock.Add(2 * time.Hour) // our SVID is now expired
	if err := exchange(ln.Addr().String(), cfg.Clone()); err == nil {
		t.Fatal("new handshake succeeded with our SVID expired")
	}
	eventually(t, "failure counted as no_svid", func() bool {
		return handshakeFailures(t, metrics, ListenerInbound, ReasonNoSVID) == 1
	})
	if code, s := ka.do(t, "/after-expiry"); code != http.StatusOK || s.Header.Get(HeaderPeerID) != webID {
		t.Fatalf("established connection: status %d, peer %q", code, s.Header.Get(HeaderPeerID))
	}
	// A renewed SVID is served from the next handshake on.
	clock.Set(time.Now())
	m.api.Set(certstest.SVID(t, m.ca, apiID))
	if err := exchange(ln.Addr().String(), cfg.Clone()); err != nil {
		t.Fatalf("after renewal: %v", err)
	}
}

func TestInboundRotationKeepsConnections(t *testing.T) {
	checkLeaks(t)
	m, a := newMesh(t), newApp(t)
	ln := listenLocal(t)
	startInbound(t, m, a, newMetrics(t), ln)
	cfg := certs.MTLSClientConfig(m.web, m.bundle, certs.AuthorizeID(spiffeid.RequireFromString(apiID)), certs.TLSOptions{})
	first := m.api.Current()

	old := dialKeepAlive(t, ln.Addr().String(), cfg)
	if code, _ := old.do(t, "/1"); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if old.serial() != serialOf(first) {
		t.Fatalf("served serial %s, want %s", old.serial(), serialOf(first))
	}

	for i := range 3 {
		next := certstest.SVID(t, m.ca, apiID)
		m.api.Set(next)
		if code, s := old.do(t, "/old"); code != http.StatusOK || s.Header.Get(HeaderPeerID) != webID {
			t.Fatalf("rotation %d: old connection: status %d", i, code)
		}
		fresh := dialKeepAlive(t, ln.Addr().String(), cfg)
		if code, _ := fresh.do(t, "/new"); code != http.StatusOK {
			t.Fatalf("rotation %d: new connection: status %d", i, code)
		}
		if fresh.serial() != serialOf(next) {
			t.Errorf("rotation %d: new connection saw serial %s, want %s", i, fresh.serial(), serialOf(next))
		}
	}
	if old.serial() != serialOf(first) {
		t.Errorf("old connection's serial changed")
	}
}

func TestOutboundRefusesWrongRemoteID(t *testing.T) {
	checkLeaks(t)
	m, a, metrics := newMesh(t), newApp(t), newMetrics(t)
	inLn := listenLocal(t)
	startInbound(t, m, a, metrics, inLn)
	outLn, logs := startOutbound(t, m, inLn.Addr().String(), "spiffe://minimesh.local/ns/default/sa/billing", metrics)

	resp, s := get(t, plainClient(t), "http://"+outLn.Addr().String()+"/", nil)
	if resp.StatusCode != http.StatusBadGateway || s.Path != "bad gateway\n" {
		t.Fatalf("got %d %q, want 502 bad gateway", resp.StatusCode, s.Path)
	}
	if n := a.hits.Load(); n != 0 {
		t.Errorf("app behind the wrong remote got %d requests", n)
	}
	if got := handshakeFailures(t, metrics, ListenerOutbound, ReasonUnauthorized); got != 1 {
		t.Errorf("outbound unauthorized handshakes = %v, want 1", got)
	}
	if got := requests(t, metrics, ListenerOutbound, "5xx"); got != 1 {
		t.Errorf("outbound 5xx = %v, want 1", got)
	}
	if !strings.Contains(logs.String(), "upstream failed") || !strings.Contains(logs.String(), "status=502") {
		t.Errorf("502 not logged:\n%s", logs)
	}
}

func TestOutboundRemoteDown(t *testing.T) {
	checkLeaks(t)
	m, metrics := newMesh(t), newMetrics(t)
	dead := listenLocal(t)
	addr := dead.Addr().String()
	dead.Close()
	outLn, _ := startOutbound(t, m, addr, apiID, metrics)
	resp, _ := get(t, plainClient(t), "http://"+outLn.Addr().String()+"/", nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("got %d, want 502", resp.StatusCode)
	}
}

func TestPublicHTTPSWithReloadedCertificate(t *testing.T) {
	checkLeaks(t)
	a, metrics := newApp(t), newMetrics(t)
	dir := t.TempDir()
	cert1, cert1PEM, key1PEM := selfSigned(t)
	cert2, cert2PEM, key2PEM := selfSigned(t)
	certFile, keyFile := writeCert(t, dir, cert1PEM, key1PEM)
	fc, err := certs.NewFileCertificate(certs.FileCertificateConfig{CertFile: certFile, KeyFile: keyFile, ReloadInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger()
	ln := listenLocal(t)
	pub, err := NewPublic(PublicConfig{Listener: ln, App: a.addr(), Certificate: fc, Metrics: metrics, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	run(t, pub)

	roots := x509.NewCertPool()
	roots.AddCert(cert1)
	roots.AddCert(cert2)
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	url := "https://" + ln.Addr().String()

	// HTTP/2 from an ordinary client; no client certificate needed.
	resp, s := get(t, tlsClient(t, cfg.Clone(), true), url+"/pub", http.Header{
		HeaderPeerID: {webID}, "X-Forwarded-For": {"6.6.6.6"}, "X-Mesh-Anything": {"x"},
	})
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("status %d over %s", resp.StatusCode, resp.Proto)
	}
	for k := range s.Header {
		if applink.HasPrefixFold(k, "X-Mesh-") {
			t.Errorf("app saw %s from a public client", k)
		}
	}
	if got := s.Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto %q, want https", got)
	}
	if got := s.Header.Values("X-Forwarded-For"); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Errorf("X-Forwarded-For %q, want [127.0.0.1] (the client's own list is not trusted)", got)
	}

	old := dialKeepAlive(t, ln.Addr().String(), cfg)
	if code, _ := old.do(t, "/1"); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	serial1 := cert1.SerialNumber.Text(16)
	if old.serial() != serial1 {
		t.Fatalf("serving serial %s, want %s", old.serial(), serial1)
	}

	writeCert(t, dir, cert2PEM, key2PEM)
	serial2 := cert2.SerialNumber.Text(16)
	eventually(t, "new connections get the rewritten certificate", func() bool {
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16) == serial2
	})
	if code, _ := old.do(t, "/2"); code != http.StatusOK || old.serial() != serial1 {
		t.Fatalf("old connection after reload: status %d serial %s", code, old.serial())
	}
	if got := requests(t, metrics, ListenerPublic, "2xx"); got != 3 {
		t.Errorf("public 2xx = %v, want 3", got)
	}
}

func TestDrainLetsRequestsInFlightFinish(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	entered, release := make(chan struct{}), make(chan struct{})
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	}))
	t.Cleanup(a.Close)
	ln := listenLocal(t)
	addr := ln.Addr().String()
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: ln, App: a.Listener.Addr().String(), SVID: m.api, Bundle: m.bundle, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()

	c := mtlsClient(t, m.web, m.bundle, apiID, true)
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := c.Get("https://" + addr + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-entered
	cancel()
	eventually(t, "listener closed", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a request was in flight", err)
	default:
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "done" {
		t.Fatalf("request in flight: %q, %v", r.body, r.err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestDrainIsBounded(t *testing.T) {
	checkLeaks(t)
	m := newMesh(t)
	entered, release := make(chan struct{}), make(chan struct{})
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(a.Close)
	ln := listenLocal(t)
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: ln, App: a.Listener.Addr().String(), SVID: m.api, Bundle: m.bundle,
		Logger: log, Limits: Limits{Drain: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	c := mtlsClient(t, m.web, m.bundle, apiID, false)
	got := make(chan error, 1)
	go func() {
		resp, err := c.Get("https://" + ln.Addr().String() + "/stuck")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		got <- err
	}()
	<-entered
	cancel()
	// Run returns although the app never answers: the drain is cut short.
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := <-got; err == nil {
		t.Errorf("stuck request succeeded after its connection was cut")
	}
	close(release)
}

func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Fatal("registering twice on one registry succeeded")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains([]string{"listener", "class", "reason"}, l.GetName()) {
					t.Errorf("%s has unexpected label %s", mf.GetName(), l.GetName())
				}
			}
		}
	}
	for _, n := range []string{"minimesh_proxy_requests_total", "minimesh_proxy_handshake_failures_total"} {
		if !names[n] {
			t.Errorf("%s not registered", n)
		}
	}
}
