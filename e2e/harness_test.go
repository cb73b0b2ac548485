package e2e

import (
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
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
	"minimesh/internal/meshctl"
)

const td = "minimesh.local"

func idOf(sa string) spiffeid.ID {
	return spiffeid.RequireFromString(fmt.Sprintf("spiffe://%s/ns/default/sa/%s", td, sa))
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// app is a real HTTP app on loopback that reports what it received.
type app struct {
	addr string
}

type seen struct {
	Service string `json:"service"`
	Path    string `json:"path"`
	PeerID  string `json:"peer_id"`
	Proto   string `json:"proto"`
}

func startApp(t *testing.T, name string) *app {
	t.Helper()
	l := listen(t)
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(seen{Service: name, Path: r.URL.Path, PeerID: r.Header.Get("X-Mesh-Peer-Id"), Proto: r.Proto})
		}),
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return &app{addr: l.Addr().String()}
}

type proxyHandle struct {
	*sidecar.Sidecar
	inbound    string
	admin      string
	public     string
	publicCert string
	upstream   map[string]string
	registry   *prometheus.Registry
	cancel     context.CancelFunc
	done       chan error
}

type proxyOpts struct {
	service  string
	token    string
	pin      string
	stateDir string
	app      *app
	// upstreams: name -> remote proxy whose inbound to call
	upstreams map[string]*proxyHandle
	public    bool
	// inbound reuses a fixed address (restarts).
	inbound string
	// sharedDir receives ConfigFile resources.
	sharedDir string
}

func logger() *slog.Logger {
	if os.Getenv("MINIMESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

func startProxy(t *testing.T, m *controlplanetest.Meshd, o proxyOpts) *proxyHandle {
	t.Helper()
	var inL net.Listener
	if o.inbound != "" {
		var err error
		for i := 0; i < 50; i++ {
			if inL, err = net.Listen("tcp", o.inbound); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
	} else {
		inL = listen(t)
	}
	adminL := listen(t)
	h := &proxyHandle{inbound: inL.Addr().String(), admin: adminL.Addr().String(), upstream: map[string]string{}}
	cfg := sidecar.Config{
		ControlPlane:    m.Addr,
		Token:           o.token,
		CAPin:           o.pin,
		Service:         o.service,
		App:             o.app.addr,
		StateDir:        o.stateDir,
		InboundListener: inL,
		AdminListener:   adminL,
		Logger:          logger(),
		AgentBackoffMax: time.Second,
		Version:         "test",
		SharedDir:       o.sharedDir,
		Registry:        prometheus.NewRegistry(),
	}
	h.registry = cfg.Registry
	for name, remote := range o.upstreams {
		l := listen(t)
		h.upstream[name] = l.Addr().String()
		cfg.Upstreams = append(cfg.Upstreams, proxy.Upstream{Name: name, Listener: l, Listen: l.Addr().String(), Remote: remote.inbound, ID: idOf(name)})
	}
	if o.public {
		certFile, keyFile := writePublicCert(t, t.TempDir())
		pl := listen(t)
		h.public, h.publicCert = pl.Addr().String(), certFile
		cfg.PublicListener, cfg.PublicCert, cfg.PublicKey = pl, certFile, keyFile
	}
	h.Sidecar, h.cancel, h.done = runSidecar(t, o.service, cfg)
	return h
}

func (h *proxyHandle) stop() {
	h.cancel()
	h.done <- <-h.done
}

// runSidecar builds a sidecar from cfg and runs it until the test ends.
// done receives Run's result and holds it (whoever takes it puts it back);
// the cleanup cancels, waits and reports an error, as Run does if it stops
// by itself.
func runSidecar(t *testing.T, name string, cfg sidecar.Config) (*sidecar.Sidecar, context.CancelFunc, chan error) {
	t.Helper()
	sc, err := sidecar.New(cfg)
	if err != nil {
		t.Fatalf("sidecar.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := sc.Run(ctx)
		if err != nil && ctx.Err() == nil {
			t.Errorf("proxy %s stopped by itself: %v", name, err)
		}
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		err := <-done
		done <- err
		if err != nil && ctx.Err() != nil {
			t.Errorf("%s proxy: %v", name, err)
		}
	})
	return sc, cancel, done
}

// waitAdminReady waits until a proxy's admin port answers /ready with 200.
func waitAdminReady(t *testing.T, name, admin string) {
	t.Helper()
	eventually(t, 20*time.Second, name+" proxy ready", func() error {
		resp, err := http.Get("http://" + admin + "/ready")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("/ready %d: %s", resp.StatusCode, b)
		}
		return nil
	})
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, within, err)
}

func (h *proxyHandle) waitReady(t *testing.T) {
	t.Helper()
	waitAdminReady(t, "", h.admin)
}

func (h *proxyHandle) serial() string {
	cur := h.Agent.SVIDSource().Current()
	if cur == nil {
		return ""
	}
	return cur.Certificates[0].SerialNumber.Text(16)
}

// get calls url with client and decodes what the app saw.
func get(client *http.Client, url string, hdr http.Header) (seen, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return seen{}, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return seen{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return seen{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return seen{}, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var s seen
	if err := json.Unmarshal(b, &s); err != nil {
		return seen{}, fmt.Errorf("%w: %s", err, b)
	}
	return s, nil
}

func writePublicCert(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// publicClient trusts the public certificate served at addr.
func publicClient(t *testing.T, certFile string) *http.Client {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}}}
}

// mtlsClient presents svid to an inbound listener.
func mtlsClient(src *certs.SVIDSource, bundle *certs.BundleSource, server spiffeid.ID) *http.Client {
	tc := certs.MTLSClientConfig(src, bundle, certs.AuthorizeID(server), certs.TLSOptions{})
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, MaxIdleConnsPerHost: 1}}
}

// counter sums a counter family of the proxy's registry, filtered by label.
func (h *proxyHandle) counter(t *testing.T, name, label, value string) float64 {
	t.Helper()
	fams, err := h.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

func httpGet(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// meshctlRun runs meshctl in-process against m and returns its output.
func meshctlRun(t *testing.T, m *controlplanetest.Meshd, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &out})
	root.SetArgs(append([]string{"--server", m.Addr, "--credentials", m.OperatorCredentialDir()}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("meshctl %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// verifyWith verifies a chain against a CA's current bundle.
func verifyWith(chain []*x509.Certificate, ca *certs.CA) (spiffeid.ID, []*x509.Certificate, error) {
	return certs.VerifyPeerCertificates(chain, ca.Bundle(), time.Now())
}
