package sidecar

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// pathApp is a real HTTP app on loopback that records the paths it got.
type pathApp struct {
	addr  string
	mu    sync.Mutex
	paths []string
}

func startPathApp(t *testing.T) *pathApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &pathApp{addr: ln.Addr().String()}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.paths = append(a.paths, r.URL.Path)
		a.mu.Unlock()
		_, _ = io.WriteString(w, "app: "+r.URL.Path)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

func (a *pathApp) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.paths...)
}

// selfSigned writes a certificate and key for 127.0.0.1 and returns their
// files and a pool that trusts it.
func selfSigned(t *testing.T) (string, string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return certFile, keyFile, pool
}

func applyDocs(t *testing.T, m *controlplanetest.Meshd, doc string) {
	t.Helper()
	docs, err := api.Decode("test.yaml", strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	req := &meshv1.ApplyRequest{}
	for _, d := range docs {
		req.Resources = append(req.Resources, api.ToProto(d.Object))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Operator(t).Apply(ctx, req); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// waitFor polls cond (every 20ms, at most 20s: a bound for a hung test,
// not a timing assertion) until it returns nil.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

func adminGet(addr, path string) (int, string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// The proxy holds its SVID but its first snapshot from a real meshd is
// refused (a ConfigFile for a proxy without --shared-dir: a real NACK, so
// no config is in force). Until a snapshot applies, /ready is 503 with the
// reason and the public port serves nobody: a connection made meanwhile
// is answered only once the policy is in force, 403 for the denied path,
// and the app never sees it. A restart without meshd serves the last good
// snapshot from the state dir at once.
func TestNoTrafficBeforeFirstSnapshot(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	tok := m.Token(t, "default", "api", 1)
	applyDocs(t, m, `
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api"]
---
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: edge}
spec:
  service: api
  rules:
  - {action: deny, paths: [{prefix: /admin}]}
  - {action: allow, paths: [{prefix: /}]}
---
apiVersion: minimesh.io/v1alpha1
kind: ConfigFile
metadata: {name: api-settings}
spec: {service: api, path: settings.ini, mode: 0600, content: "password=hunter2\n"}
`)
	app := startPathApp(t)
	certFile, keyFile, pool := selfSigned(t)
	stateDir := t.TempDir()

	run := func(controlPlane string) (string, string, func()) {
		listen := func() net.Listener {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return ln
		}
		inL, admL, pubL := listen(), listen(), listen()
		sc, err := New(Config{
			ControlPlane: controlPlane, Token: tok.GetSecret(), CAPin: tok.GetCaPin(), Service: "api",
			App: app.addr, StateDir: stateDir, InboundListener: inL, AdminListener: admL,
			PublicListener: pubL, PublicCert: certFile, PublicKey: keyFile,
			Registry: prometheus.NewRegistry(), AgentBackoffMax: 200 * time.Millisecond, Version: "test",
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sc.Run(ctx) }()
		return admL.Addr().String(), pubL.Addr().String(), func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	admin, public, stop := run(m.Addr)

	// Identity first (bootstrapped), then the refused snapshot.
	waitFor(t, "the first snapshot refused", func() error {
		code, body, err := adminGet(admin, "/ready")
		if err != nil {
			return err
		}
		if !strings.Contains(body, "refused") {
			return fmt.Errorf("/ready %d: %s", code, body)
		}
		return nil
	})
	code, body, err := adminGet(admin, "/ready")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "no config applied yet") || !strings.Contains(body, "shared-dir") {
		t.Errorf("/ready before any snapshot applied: %d %q %v; want 503 with the reason", code, body, err)
	}

	// A client of the public port connects now (the pre-opened listener's
	// backlog takes it) and asks for the denied path.
	conn, err := net.DialTimeout("tcp", public, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		code int
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		if _, err := io.WriteString(tc, "GET /admin/users HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"); err != nil {
			got <- answer{err: err}
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			got <- answer{err: err}
			return
		}
		resp.Body.Close()
		got <- answer{code: resp.StatusCode}
	}()
	select {
	case a := <-got:
		t.Fatalf("the public port answered before any config was in force: %d %v", a.code, a.err)
	default:
	}

	// The fix: meshd drops the ConfigFile, the next snapshot applies.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Operator(t).DeleteResource(ctx, &meshv1.DeleteResourceRequest{Kind: "ConfigFile", Namespace: "default", Name: "api-settings"}); err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a.err != nil || a.code != http.StatusForbidden {
		t.Errorf("GET /admin/users sent before the first snapshot: %d %v, want 403 once the policy is in force", a.code, a.err)
	}
	code, body, err = adminGet(admin, "/ready")
	if err != nil || code != http.StatusOK {
		t.Errorf("/ready after the snapshot: %d %q %v", code, body, err)
	}
	for _, p := range app.seen() {
		if strings.HasPrefix(p, "/admin") {
			t.Errorf("a denied request reached the app: %s", p)
		}
	}
	stop()

	// Without meshd, the last good snapshot opens the listeners at start.
	m.Stop()
	admin, public, stop = run(m.Addr)
	defer stop()
	waitFor(t, "ready from the state dir", func() error {
		code, body, err := adminGet(admin, "/ready")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("/ready %d %q %v", code, body, err)
		}
		return nil
	})
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	for path, want := range map[string]int{"/admin/users": http.StatusForbidden, "/hello": http.StatusOK} {
		resp, err := c.Get("https://" + public + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s from the last good snapshot: %d, want %d", path, resp.StatusCode, want)
		}
	}
	c.CloseIdleConnections()
}
