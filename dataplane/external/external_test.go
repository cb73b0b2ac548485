package external_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/dataplane/accesslog"
	"minimesh/dataplane/balancer"
	"minimesh/dataplane/external"
	meshv1 "minimesh/proto/mesh/v1"
)

// server is an HTTPS (or TLS echo) server of the test's own.
type server struct {
	addr  string
	port  uint32
	caPEM string       // the PEM that verifies it
	conns atomic.Int64 // open now
	peak  atomic.Int64
}

// startHTTPS serves HTTPS for dnsName on 127.0.0.1; clientCAs, when set,
// requires a client certificate that it verifies. The handler answers
// "hello <client CN or URI>".
func startHTTPS(t *testing.T, dnsName string, clientCAs *x509.CertPool, handler http.HandlerFunc) *server {
	t.Helper()
	cert, _ := certstest.SelfSigned(t, dnsName)
	s := &server{caPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		tc.ClientCAs, tc.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	_, p, _ := net.SplitHostPort(s.addr)
	port, _ := strconv.Atoi(p)
	s.port = uint32(port)
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			who := "anonymous"
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				who = r.TLS.PeerCertificates[0].URIs[0].String()
			}
			fmt.Fprintf(w, "hello %s %s host=%s", who, r.URL.Path, r.Host)
		}
	}
	srv := &http.Server{Handler: handler, ConnState: func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			n := s.conns.Add(1)
			for {
				p := s.peak.Load()
				if n <= p || s.peak.CompareAndSwap(p, n) {
					break
				}
			}
		case http.StateClosed, http.StateHijacked:
			s.conns.Add(-1)
		}
	}, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// spec is an https ExternalService for s, verified as dnsName.
func (s *server) spec(dnsName string) *meshv1.ExternalServiceSpec {
	return &meshv1.ExternalServiceSpec{Hosts: []string{"127.0.0.1"}, Port: s.port,
		Protocol: meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTPS, ServerName: dnsName, CaBundle: s.caPEM}
}

func snapshot(t *testing.T, specs map[string]*meshv1.ExternalServiceSpec) *meshv1.Snapshot {
	t.Helper()
	snap := &meshv1.Snapshot{Version: "v"}
	for name, sp := range specs {
		o := &api.ExternalService{Metadata: api.Metadata{Name: name, Namespace: "default"}, Spec: sp}
		if err := o.Validate(); err != nil {
			t.Fatalf("spec %s: %v", name, err)
		}
		snap.Resources = append(snap.Resources, api.ToProto(o))
	}
	return snap
}

func newSet(t *testing.T, cfg external.Config) *external.Set {
	t.Helper()
	s, err := external.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func apply(t *testing.T, s *external.Set, specs map[string]*meshv1.ExternalServiceSpec) error {
	t.Helper()
	commit, err := s.Prepare(snapshot(t, specs))
	if err != nil {
		return err
	}
	commit()
	return nil
}

func mustApply(t *testing.T, s *external.Set, specs map[string]*meshv1.ExternalServiceSpec) {
	t.Helper()
	if err := apply(t, s, specs); err != nil {
		t.Fatal(err)
	}
}

// call sends GET path through the set's service name, as the app does.
func call(t *testing.T, s *external.Set, name, path string) (int, string) {
	t.Helper()
	sv := s.Get(name)
	if sv == nil {
		t.Fatalf("no service %s", name)
	}
	srv := &http.Server{Handler: sv}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + ln.Addr().String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTPSOriginationVerifies(t *testing.T) {
	srv := startHTTPS(t, "api.partner.test", nil, nil)
	var observed []string
	var mu sync.Mutex
	var lines syncBuffer
	al := accesslog.New(accesslog.Config{Output: &lines})
	if err := al.Apply(&api.AccessLog{Metadata: api.Metadata{Name: "web", Namespace: "default"}, Spec: &meshv1.AccessLogSpec{Service: "web", Enabled: true,
		Fields: []string{"method", "path", "status", "upstream"}}}); err != nil {
		t.Fatal(err)
	}
	s := newSet(t, external.Config{AccessLog: al, Observe: func(name, ns string, code int, _ float64) {
		mu.Lock()
		observed = append(observed, fmt.Sprintf("%s.%s %d", name, ns, code))
		mu.Unlock()
	}})
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": srv.spec("api.partner.test")})
	code, body := call(t, s, "partner", "/v1/x")
	if code != 200 || !strings.HasPrefix(body, "hello anonymous /v1/x host=api.partner.test:") {
		t.Fatalf("got %d %q", code, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(observed) != 1 || observed[0] != "partner.default 200" {
		t.Errorf("observed %v", observed)
	}
	if l := lines.String(); !strings.Contains(l, `"/v1/x"`) || !strings.Contains(l, `"partner `+srv.addr+`"`) || !strings.Contains(l, "200") {
		t.Errorf("access log %q, want the path, status and upstream (name and address)", l)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestWrongCARefused(t *testing.T) {
	srv := startHTTPS(t, "api.partner.test", nil, nil)
	other := startHTTPS(t, "api.partner.test", nil, nil) // another self-signed key: its PEM does not verify srv
	s := newSet(t, external.Config{})
	sp := srv.spec("api.partner.test")
	sp.CaBundle = other.caPEM
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": sp})
	code, body := call(t, s, "partner", "/")
	if code != http.StatusBadGateway || !strings.Contains(body, "not verified") || !strings.Contains(body, "authority") {
		t.Fatalf("got %d %q, want 502 saying the certificate is not verified", code, body)
	}
}

func TestSystemRootsDoNotTrustAPrivateServer(t *testing.T) {
	srv := startHTTPS(t, "api.partner.test", nil, nil)
	s := newSet(t, external.Config{RootCAs: x509.NewCertPool()}) // "system roots" that hold nothing of the test's
	sp := srv.spec("api.partner.test")
	sp.CaBundle = ""
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": sp})
	if code, body := call(t, s, "partner", "/"); code != http.StatusBadGateway || !strings.Contains(body, "not verified") {
		t.Fatalf("got %d %q", code, body)
	}
}

func TestWrongServerNameRefused(t *testing.T) {
	srv := startHTTPS(t, "api.partner.test", nil, nil)
	s := newSet(t, external.Config{})
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": srv.spec("other.partner.test")})
	code, body := call(t, s, "partner", "/")
	if code != http.StatusBadGateway || !strings.Contains(body, "not valid for the server name") {
		t.Fatalf("got %d %q, want 502 for the server name", code, body)
	}
}

// clientPair writes an SVID of ca as PEM files and returns their paths.
func clientPair(t *testing.T, dir string, ca *certs.CA, id string) (string, string) {
	t.Helper()
	svid := certstest.SVID(t, ca, id)
	cert, key, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeAtomic(t, cf, cert)
	writeAtomic(t, kf, key)
	return cf, kf
}

// writeAtomic replaces path as a Secret's volume update does (rename).
func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestClientCertificate(t *testing.T) {
	ca := certstest.NewCA(t, "partner.test")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root())
	srv := startHTTPS(t, "api.partner.test", pool, nil)
	dir := t.TempDir()
	cf, kf := clientPair(t, dir, ca, "spiffe://partner.test/client-a")

	s := newSet(t, external.Config{})
	// Without a client certificate the server refuses the handshake.
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": srv.spec("api.partner.test")})
	if code, body := call(t, s, "partner", "/"); code != http.StatusBadGateway {
		t.Fatalf("without a client certificate: %d %q, want 502", code, body)
	}
	// With one it works.
	sp := srv.spec("api.partner.test")
	sp.ClientCertificate = &meshv1.ClientCertificate{CertFile: cf, KeyFile: kf}
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": sp})
	if code, body := call(t, s, "partner", "/"); code != 200 || !strings.Contains(body, "hello spiffe://partner.test/client-a") {
		t.Fatalf("with a client certificate: %d %q", code, body)
	}

	// Rotated files: the next connection presents the new pair.
	clientPair(t, dir, ca, "spiffe://partner.test/client-b")
	s.Reload()
	if code, body := call(t, s, "partner", "/"); code != 200 || !strings.Contains(body, "client-b") {
		t.Fatalf("after rotation: %d %q, want client-b", code, body)
	}

	// A key that does not match the certificate: the last good pair stays,
	// and Status says why the files are not in use.
	goodKey, err := os.ReadFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	inUse := s.Status()[0].ClientCertificate
	other := certstest.SVID(t, ca, "spiffe://partner.test/client-c")
	_, otherKey, _ := other.Marshal()
	writeAtomic(t, kf, otherKey)
	s.Reload()
	if code, body := call(t, s, "partner", "/"); code != 200 || !strings.Contains(body, "client-b") {
		t.Fatalf("after a mismatched rotation: %d %q, want the last good pair (client-b)", code, body)
	}
	st := s.Status()
	if len(st) != 1 || st[0].Name != "partner" || st[0].Protocol != "https" || st[0].ServerName != "api.partner.test" || len(st[0].Hosts) != 1 {
		t.Fatalf("status %+v", st)
	}
	cc := st[0].ClientCertificate
	if cc == nil || cc.CertFile != cf || cc.KeyFile != kf || !cc.NotAfter.Equal(inUse.NotAfter) || !strings.Contains(cc.LastError, "do not make a pair") {
		t.Fatalf("client certificate %+v, want the pair in use (not after %s) and why the files are not", cc, inUse.NotAfter)
	}
	// The files back as they were: no error shown any more.
	writeAtomic(t, kf, goodKey)
	s.Reload()
	if cc := s.Status()[0].ClientCertificate; cc.LastError != "" {
		t.Errorf("the files are the pair in use again, but Status shows %q", cc.LastError)
	}
}

func TestClientCertificateProblemsAreNACKs(t *testing.T) {
	ca := certstest.NewCA(t, "partner.test")
	srv := startHTTPS(t, "api.partner.test", nil, nil)
	dir := t.TempDir()
	cf, kf := clientPair(t, dir, ca, "spiffe://partner.test/a")
	s := newSet(t, external.Config{})
	good := srv.spec("api.partner.test")
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": good})

	missing := srv.spec("api.partner.test")
	missing.ClientCertificate = &meshv1.ClientCertificate{CertFile: filepath.Join(dir, "nope.crt"), KeyFile: kf}
	err := apply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": missing})
	if err == nil || !strings.Contains(err.Error(), "ExternalService default/partner") || !strings.Contains(err.Error(), "certFile") ||
		!strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing cert file: %v", err)
	}
	other := certstest.SVID(t, ca, "spiffe://partner.test/b")
	_, otherKey, _ := other.Marshal()
	kf2 := filepath.Join(dir, "other.key")
	writeAtomic(t, kf2, otherKey)
	mismatched := srv.spec("api.partner.test")
	mismatched.ClientCertificate = &meshv1.ClientCertificate{CertFile: cf, KeyFile: kf2}
	err = apply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": mismatched})
	if err == nil || !strings.Contains(err.Error(), "do not make a pair") || bytes.Contains([]byte(err.Error()), otherKey[:40]) {
		t.Fatalf("mismatched pair: %v", err)
	}
	// The last good config stays in force.
	if code, _ := call(t, s, "partner", "/"); code != 200 {
		t.Fatalf("the last good config was lost: %d", code)
	}
}

func TestDeadHostEjected(t *testing.T) {
	srv := startHTTPS(t, "api.partner.test", nil, nil)
	// 127.0.0.2 on the same port: nothing listens there (refused).
	s := newSet(t, external.Config{Outlier: balancer.Config{ConsecutiveFailures: 2, BaseEjection: time.Hour}})
	sp := srv.spec("api.partner.test")
	sp.Hosts = []string{"127.0.0.2", "127.0.0.1"}
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": sp})
	sv := s.Get("partner")
	for i := range 20 {
		c, err := sv.Dial(t.Context()) // retries connects: every call reaches the live host
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		_ = c.Close()
	}
	var ejected []string
	for _, st := range sv.Status() {
		if st.Ejected {
			ejected = append(ejected, st.Addr)
		}
	}
	want := net.JoinHostPort("127.0.0.2", strconv.Itoa(int(srv.port)))
	if len(ejected) != 1 || ejected[0] != want {
		t.Fatalf("ejected %v, want [%s]", ejected, want)
	}
}

func TestConnectRetriesAreBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close() // nothing listens: every connect is refused
	s := newSet(t, external.Config{ConnectAttempts: 2})
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"db": {Hosts: []string{"127.0.0.1"}, Port: uint32(port),
		Protocol: meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_TCP, ConnectTimeout: durationpb.New(time.Second)}})
	_, err = s.Get("db").Dial(t.Context())
	var de *external.DialError
	if !asDialError(err, &de) || len(de.Errs) != 2 {
		t.Fatalf("got %v, want a DialError of 2 attempts", err)
	}
}

func asDialError(err error, de **external.DialError) bool {
	d, ok := err.(*external.DialError)
	*de = d
	return ok
}

func TestHTTPPoolBounded(t *testing.T) {
	release := make(chan struct{})
	var inHandler atomic.Int64
	srv := startHTTPS(t, "api.partner.test", nil, func(w http.ResponseWriter, _ *http.Request) {
		inHandler.Add(1)
		<-release
		_, _ = io.WriteString(w, "ok")
	})
	s := newSet(t, external.Config{MaxConns: 2, MaxIdleConns: 1})
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": srv.spec("api.partner.test")})
	var wg sync.WaitGroup
	codes := make(chan int, 5)
	for range 5 {
		wg.Go(func() {
			code, _ := call(t, s, "partner", "/")
			codes <- code
		})
	}
	// Two requests reach the server; the others wait for a connection.
	for i := 0; inHandler.Load() < 2; i++ {
		if i == 2000 {
			t.Fatalf("%d requests reached the server", inHandler.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a third would have arrived by now
	if n := srv.peak.Load(); n != 2 {
		t.Errorf("%d connections to the server at once, want 2 (MaxConns)", n)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("code %d", c)
		}
	}
	if n := srv.peak.Load(); n != 2 {
		t.Errorf("peak %d connections, want 2", n)
	}
}

// startTLSEcho is a TLS server that echoes lines.
func startTLSEcho(t *testing.T, dnsName string) *server {
	t.Helper()
	cert, _ := certstest.SelfSigned(t, dnsName)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return &server{addr: ln.Addr().String(), port: uint32(ln.Addr().(*net.TCPAddr).Port),
		caPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))}
}

func serve(t *testing.T, s *external.Set, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, name, external.ListenerLimits{Drain: time.Second}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestTLSListener(t *testing.T) {
	echo := startTLSEcho(t, "db.partner.test")
	reg := prometheus.NewRegistry()
	var lines syncBuffer
	al := accesslog.New(accesslog.Config{Output: &lines})
	if err := al.Apply(&api.AccessLog{Metadata: api.Metadata{Name: "web", Namespace: "default"}, Spec: &meshv1.AccessLogSpec{Service: "web", Enabled: true,
		Fields: []string{"method", "authority", "status", "bytes_received", "bytes_sent", "upstream"}}}); err != nil {
		t.Fatal(err)
	}
	s := newSet(t, external.Config{Registerer: reg, MaxConns: 1, AccessLog: al})
	addr := serve(t, s, "db")

	// Not in the config yet: a TCP client's connection is closed.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("unknown name: read %v, want EOF", err)
	}
	_ = c.Close()

	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"db": {Hosts: []string{"127.0.0.1"}, Port: echo.port,
		Protocol: meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_TLS, ServerName: "db.partner.test", CaBundle: echo.caPEM}})
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	// MaxConns 1: a second connection while the first is open is closed.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("over the limit: read %v, want EOF", err)
	}
	_ = c2.Close()
	for res, want := range map[string]float64{external.ResultUnknown: 1, external.ResultRelayed: 1, external.ResultOverLimit: 1} {
		eventuallyCount(t, reg, res, want)
	}

	// A wrong server name: the connection is closed, counted.
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"db": {Hosts: []string{"127.0.0.1"}, Port: echo.port,
		Protocol: meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_TLS, ServerName: "evil.partner.test", CaBundle: echo.caPEM}})
	_ = c.Close()
	// Once the first relay has given its slot back (an attempt before
	// that is over the limit, and closed too), the next connection is
	// closed because the server does not verify.
	for i := 0; count(reg, external.ResultDialFailed) == 0; i++ {
		if i == 100 {
			t.Fatal("no dial_failed: the server with the wrong name was not refused")
		}
		c3, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c3.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c3.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("wrong server name: read %v, want EOF", err)
		}
		_ = c3.Close()
		time.Sleep(10 * time.Millisecond)
	}
	if n := count(reg, external.ResultRelayed); n != 1 {
		t.Errorf("relayed %v, want 1 (the wrong server name relayed nothing)", n)
	}
	// One line per relay: the first (5 bytes each way), then the refused.
	l := lines.String()
	if !strings.Contains(l, `"CONNECT"`) || !strings.Contains(l, `"db `+echo.addr+`"`) || !strings.Contains(l, "502") ||
		!strings.Contains(l, `"bytes_received":5,"bytes_sent":5`) {
		t.Errorf("access log %q, want a CONNECT line to db's host and a 502", l)
	}
}

func count(reg *prometheus.Registry, result string) float64 {
	fams, _ := reg.Gather()
	var n float64
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

func eventuallyCount(t *testing.T, reg *prometheus.Registry, result string, want float64) {
	t.Helper()
	var got float64
	for range 200 {
		if got = count(reg, result); got == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("result %s counted %v, want %v", result, got, want)
}

func TestHTTPListenerUnknownName502(t *testing.T) {
	s := newSet(t, external.Config{})
	addr := serve(t, s, "partner")
	resp, err := http.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), `"partner" is not in this proxy's config`) {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	srv := startHTTPS(t, "api.partner.test", nil, nil)
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": srv.spec("api.partner.test")})
	resp, err = http.Get("http://" + addr + "/y")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "hello anonymous /y") {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	if got := s.Route("api.partner.test"); got == nil {
		t.Error("Route does not find the https service by its server name")
	}
	if got := s.Route("api.partner.test:1"); got != nil {
		t.Error("Route found the service on another port")
	}
}

func TestIdleConnectionsClosedAfterIdleTimeout(t *testing.T) {
	srv := startHTTPS(t, "api.partner.test", nil, nil)
	s := newSet(t, external.Config{})
	sp := srv.spec("api.partner.test")
	sp.IdleTimeout = durationpb.New(50 * time.Millisecond)
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": sp})
	if code, _ := call(t, s, "partner", "/"); code != 200 {
		t.Fatal(code)
	}
	for i := 0; srv.conns.Load() != 0; i++ {
		if i == 1000 {
			t.Fatalf("%d pooled connections still open long after idleTimeout", srv.conns.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPlainHTTPByHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain %s tls=%v xff=%q mesh=%q", r.Host, r.TLS != nil, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Mesh-Peer-Id"))
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	s := newSet(t, external.Config{})
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"legacy": {Hosts: []string{"localhost"}, Port: uint32(port),
		Protocol: meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTP}})
	h := s.Route("LOCALHOST.")
	if h == nil {
		t.Fatal("no route for the host, case and trailing dot aside")
	}
	front := &http.Server{Handler: h}
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = front.Serve(fl) }()
	defer front.Close()
	req, _ := http.NewRequest("GET", "http://"+fl.Addr().String()+"/", nil)
	req.Header.Set("X-Mesh-Peer-Id", "spiffe://minimesh.local/ns/default/sa/admin")
	for range 3 {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf(`plain localhost:%d tls=false xff="" mesh=""`, port)
		if resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("got %d %q, want %q", resp.StatusCode, b, want)
		}
	}
}

// TestSilentServiceTimesOut: a service that accepts a call and never
// answers costs the app ResponseHeader, then a 502 that says so, rather
// than a call that hangs; the next call, answered, goes through.
func TestSilentServiceTimesOut(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	srv := startHTTPS(t, "api.partner.test", nil, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/silent" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		fmt.Fprint(w, "answered")
	})
	var codes []int
	var mu sync.Mutex
	s := newSet(t, external.Config{ResponseHeader: 200 * time.Millisecond, Observe: func(_, _ string, code int, _ float64) {
		mu.Lock()
		codes = append(codes, code)
		mu.Unlock()
	}})
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"partner": srv.spec("api.partner.test")})
	code, body := call(t, s, "partner", "/silent")
	if code != http.StatusBadGateway || !strings.Contains(body, `external service "partner"`) || !strings.Contains(body, "timeout awaiting response headers") {
		t.Fatalf("silent service: %d %q, want a 502 naming the service and the timeout", code, body)
	}
	if code, body := call(t, s, "partner", "/"); code != 200 || body != "answered" {
		t.Fatalf("after the timeout: %d %q", code, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(codes) != 2 || codes[0] != http.StatusBadGateway || codes[1] != 200 {
		t.Errorf("observed %v, want [502 200]", codes)
	}
	if _, err := external.New(external.Config{ResponseHeader: -time.Second}); err == nil {
		t.Error("a negative ResponseHeader was accepted")
	}
}

// TestRegistryOnlyDNSHosts: a captured connection to an address a
// service's DNS host resolves to is declared, on the service's port only;
// a new answer replaces the old one; a failed lookup keeps what the host
// had; a host no service names any more is dropped. The default resolver
// is the system's (localhost).
func TestRegistryOnlyDNSHosts(t *testing.T) {
	var mu sync.Mutex
	answer := map[string][]netip.Addr{"db.partner.test": {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("::ffff:192.0.2.11")}}
	var failing error
	s := newSet(t, external.Config{Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		defer mu.Unlock()
		if failing != nil {
			return nil, failing
		}
		return answer[host], nil
	}})
	tcp := func(host string, port uint32) *meshv1.ExternalServiceSpec {
		return &meshv1.ExternalServiceSpec{Hosts: []string{host}, Port: port, Protocol: meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_TCP}
	}
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"db": tcp("db.partner.test", 5432), "ip": tcp("192.0.2.99", 22)})
	ap := netip.MustParseAddrPort
	if s.Declares(ap("192.0.2.10:5432")) {
		t.Fatal("declared before any lookup")
	}
	s.Resolve(context.Background())
	for dst, want := range map[string]bool{"192.0.2.10:5432": true, "192.0.2.11:5432": true, "[::ffff:192.0.2.10]:5432": true,
		"192.0.2.10:22": false, "192.0.2.12:5432": false, "192.0.2.99:22": true} {
		if got := s.Declares(ap(dst)); got != want {
			t.Errorf("Declares(%s) = %v, want %v", dst, got, want)
		}
	}
	if st := s.Status(); len(st) != 2 || st[0].Name != "db" || strings.Join(st[0].Resolved, " ") != "192.0.2.10:5432 192.0.2.11:5432" || st[1].Resolved != nil {
		t.Errorf("status %+v, want db's resolved addresses and none for an IP host", st)
	}
	mu.Lock()
	answer["db.partner.test"] = []netip.Addr{netip.MustParseAddr("192.0.2.20")}
	mu.Unlock()
	s.Resolve(context.Background())
	if s.Declares(ap("192.0.2.10:5432")) || !s.Declares(ap("192.0.2.20:5432")) {
		t.Error("a new answer did not replace the old one")
	}
	mu.Lock()
	failing = errors.New("no such host")
	mu.Unlock()
	s.Resolve(context.Background())
	if !s.Declares(ap("192.0.2.20:5432")) {
		t.Error("a failed lookup dropped the addresses the host had")
	}
	mu.Lock()
	failing = nil
	mu.Unlock()
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"ip": tcp("192.0.2.99", 22)})
	s.Resolve(context.Background())
	if s.Declares(ap("192.0.2.20:5432")) {
		t.Error("a host no service names any more is still declared")
	}

	sys := newSet(t, external.Config{})
	mustApply(t, sys, map[string]*meshv1.ExternalServiceSpec{"local": tcp("localhost", 6379)})
	sys.Resolve(context.Background())
	if !sys.Declares(ap("127.0.0.1:6379")) && !sys.Declares(ap("[::1]:6379")) {
		t.Error("localhost through the system's resolver is not declared")
	}
}

// TestRunResolvesAfterACommit: Run looks a new table's DNS hosts up at
// once, not at its next tick.
func TestRunResolvesAfterACommit(t *testing.T) {
	addrs := map[string]netip.Addr{"a.partner.test": netip.MustParseAddr("192.0.2.30"), "b.partner.test": netip.MustParseAddr("192.0.2.31")}
	s := newSet(t, external.Config{ResolveEvery: time.Hour, Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
		return []netip.Addr{addrs[host]}, nil
	}})
	tcp := func(host string) *meshv1.ExternalServiceSpec {
		return &meshv1.ExternalServiceSpec{Hosts: []string{host}, Port: 5432, Protocol: meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_TCP}
	}
	declared := func(addr string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !s.Declares(netip.MustParseAddrPort(addr)) {
			if time.Now().After(deadline) {
				t.Fatalf("Run did not resolve the committed table's host (%s)", addr)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"a": tcp("a.partner.test")})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	declared("192.0.2.30:5432") // Run's first lookup: it is past its start
	mustApply(t, s, map[string]*meshv1.ExternalServiceSpec{"a": tcp("a.partner.test"), "b": tcp("b.partner.test")})
	declared("192.0.2.31:5432") // only the commit can have woken it
}
