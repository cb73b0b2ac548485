package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/certs/certstest"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/proxy"
	"minimesh/dataplane/sidecar"
)

// partnerServer is an HTTPS server of the test's own, outside the mesh.
type partnerServer struct {
	port  int
	caPEM string // what verifies it
}

// startPartner serves HTTPS as dnsName with a fresh self-signed key;
// clientCAs, when set, requires and verifies a client certificate. It
// answers "hello <client URI or anonymous>".
func startPartner(t *testing.T, dnsName string, clientCAs *x509.CertPool) *partnerServer {
	t.Helper()
	cert, _ := certstest.SelfSigned(t, dnsName)
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAs != nil {
		tc.ClientCAs, tc.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "anonymous"
		if len(r.TLS.PeerCertificates) > 0 && len(r.TLS.PeerCertificates[0].URIs) > 0 {
			who = r.TLS.PeerCertificates[0].URIs[0].String()
		}
		fmt.Fprintf(w, "hello %s %s over %s", who, r.URL.Path, tls.VersionName(r.TLS.Version))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &partnerServer{port: ln.Addr().(*net.TCPAddr).Port,
		caPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))}
}

// indent makes PEM a YAML block scalar's lines.
func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}

// TestAmbassador: the app calls HTTPS servers of the test's own through
// localhost with no TLS code of its own: the proxy originates TLS,
// verifies the server and presents the client certificate from files;
// a server the caBundle does not verify is refused with a 502 saying why;
// a name not declared gets a 502; under registry-only, captured traffic
// to an undeclared host is refused and counted.
func TestAmbassador(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	partnerCA := certstest.NewCA(t, "partner.test")
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(partnerCA.Root())
	open := startPartner(t, "api.partner.test", nil)
	strict := startPartner(t, "api.partner.test", clientCAs)
	impostor := startPartner(t, "api.partner.test", nil) // its key is not the one the caBundle holds

	// The client certificate, as a mounted Secret's files.
	dir := t.TempDir()
	cert, key, err := certstest.SVID(t, partnerCA, "spiffe://partner.test/web").Marshal()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}

	ext := func(name string, port int, ca string, extra string) string {
		return fmt.Sprintf(`apiVersion: minimesh.io/v1alpha1
kind: ExternalService
metadata: {name: %s}
spec:
  hosts: ["127.0.0.1"]
  port: %d
  protocol: https
  serverName: api.partner.test
  connectTimeout: 2s
  caBundle: |
%s
%s---
`, name, port, indent(ca), extra)
	}
	applyYAML(t, m, ext("partner", open.port, open.caPEM, "")+
		ext("partner-mtls", strict.port, strict.caPEM, "  clientCertificate: {certFile: "+certFile+", keyFile: "+keyFile+"}\n")+
		ext("partner-nocert", strict.port, strict.caPEM, "")+
		ext("partner-impostor", impostor.port, open.caPEM, ""))

	// web's proxy: a local port per ExternalService, the Host-routed port,
	// and captured traffic under registry-only.
	tok := m.Token(t, "default", "web", 1)
	reg := prometheus.NewRegistry()
	locals := map[string]string{}
	cfg := sidecar.Config{
		ControlPlane: m.Addr, Token: tok.Secret, CAPin: tok.CaPin, Service: "web", App: startApp(t, "web").addr,
		StateDir: t.TempDir(), InboundListener: listen(t), AdminListener: listen(t), Logger: logger(),
		AgentBackoffMax: time.Second, Version: "test", Registry: reg,
		OutboundHTTPListener: listen(t), TransparentListener: listen(t), OutboundPolicy: sidecar.OutboundRegistryOnly,
	}
	for _, name := range []string{"partner", "partner-mtls", "partner-nocert", "partner-impostor", "undeclared"} {
		l := listen(t)
		locals[name] = "http://" + l.Addr().String()
		cfg.Externals = append(cfg.Externals, sidecar.ExternalListener{Name: name, Listener: l})
	}
	outsider := listen(t) // a TCP server outside the mesh that no ExternalService declares
	defer outsider.Close()
	dst, _ := netip.ParseAddrPort(outsider.Addr().String())
	cfg.TransparentOriginalDst = func(net.Conn) (netip.AddrPort, error) { return dst, nil }
	hostRouted := "http://" + cfg.OutboundHTTPListener.Addr().String()
	transparent := cfg.TransparentListener.Addr().String()
	h := &proxyHandle{admin: cfg.AdminListener.Addr().String(), registry: reg}
	h.Sidecar, h.cancel, h.done = runSidecar(t, "web", cfg)
	h.waitReady(t)

	// The app: plain HTTP, no TLS code, no credentials.
	app := &http.Client{Timeout: 10 * time.Second}
	call := func(url, host string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := app.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	eventually(t, 15*time.Second, "partner reachable through localhost", func() error {
		if code, body := call(locals["partner"]+"/v1/quote", ""); code != 200 || body != "hello anonymous /v1/quote over TLS 1.3" {
			return fmt.Errorf("%d %q", code, body)
		}
		return nil
	})
	if code, body := call(locals["partner-mtls"]+"/v1/orders", ""); code != 200 || body != "hello spiffe://partner.test/web /v1/orders over TLS 1.3" {
		t.Errorf("with the client certificate the server requires: %d %q", code, body)
	}
	if code, body := call(locals["partner-nocert"]+"/", ""); code != http.StatusBadGateway || !strings.Contains(body, `external service "partner-nocert"`) {
		t.Errorf("without the client certificate the server requires: %d %q, want 502", code, body)
	}
	if code, body := call(locals["partner-impostor"]+"/", ""); code != http.StatusBadGateway || !strings.Contains(body, "server certificate not verified") {
		t.Errorf("a server with a wrong certificate: %d %q, want 502 saying it is not verified", code, body)
	}
	if code, body := call(locals["undeclared"]+"/", ""); code != http.StatusBadGateway || !strings.Contains(body, "not in this proxy's config") {
		t.Errorf("a name no ExternalService has: %d %q, want 502", code, body)
	}

	// By Host on the Host-routed port; an undeclared host stays 502.
	if code, body := call(hostRouted+"/by-host", fmt.Sprintf("api.partner.test:%d", open.port)); code != 200 || !strings.HasPrefix(body, "hello anonymous /by-host") {
		t.Errorf("by Host: %d %q", code, body)
	}
	if code, body := call(hostRouted+"/", "undeclared.example"); code != http.StatusBadGateway {
		t.Errorf("an undeclared Host: %d %q, want 502", code, body)
	}

	// Captured non-HTTP traffic to an undeclared host under registry-only:
	// closed before anything reaches it, counted.
	c, err := net.Dial("tcp", transparent)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "\x16\x03\x01 not http")
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("registry-only: read %d %v, want the connection closed", n, err)
	}
	_ = c.Close()
	_ = outsider.(*net.TCPListener).SetDeadline(time.Now().Add(100 * time.Millisecond))
	if oc, err := outsider.Accept(); err == nil {
		_ = oc.Close()
		t.Error("registry-only: the undeclared host got a connection")
	}
	eventually(t, 5*time.Second, "the refusal counted", func() error {
		if n := h.counter(t, "minimesh_proxy_transparent_connections_total", "result", proxy.TransparentRefused); n != 1 {
			return fmt.Errorf("refused %v", n)
		}
		return nil
	})

	// The admin port's /external: each service with its hosts' state and
	// the client certificate in use; each local port and whether the
	// config declares its name.
	resp, err := http.Get("http://" + h.admin + "/external")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Services []struct {
			Name              string `json:"name"`
			Protocol          string `json:"protocol"`
			ClientCertificate *struct {
				CertFile  string    `json:"cert_file"`
				NotAfter  time.Time `json:"not_after"`
				LastError string    `json:"last_error"`
			} `json:"client_certificate"`
			Hosts []struct {
				Address             string `json:"address"`
				ConsecutiveFailures int64  `json:"consecutive_failures"`
			} `json:"hosts"`
		} `json:"services"`
		Listeners []struct {
			Name     string `json:"name"`
			Declared bool   `json:"declared"`
		} `json:"listeners"`
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(st.Services) != 4 || len(st.Listeners) != 5 {
		t.Fatalf("/external: %d %v %+v", resp.StatusCode, err, st)
	}
	for _, sv := range st.Services {
		switch sv.Name {
		case "partner-mtls":
			if c := sv.ClientCertificate; c == nil || c.CertFile != certFile || c.NotAfter.IsZero() || c.LastError != "" {
				t.Errorf("/external: partner-mtls's client certificate %+v", c)
			}
		case "partner-impostor":
			if len(sv.Hosts) != 1 || sv.Hosts[0].Address != fmt.Sprintf("127.0.0.1:%d", impostor.port) || sv.Hosts[0].ConsecutiveFailures < 1 {
				t.Errorf("/external: partner-impostor's host %+v, want its failed handshake counted", sv.Hosts)
			}
		}
		if sv.Protocol != "https" {
			t.Errorf("/external: %s protocol %q", sv.Name, sv.Protocol)
		}
	}
	for _, l := range st.Listeners {
		if l.Declared != (l.Name != "undeclared") {
			t.Errorf("/external: listener %s declared=%v", l.Name, l.Declared)
		}
	}

	// The external calls are in the outbound's metrics by name.
	if n := h.counter(t, "minimesh_proxy_outbound_requests_total", "destination_service", "partner"); n < 2 {
		t.Errorf("outbound_requests_total{destination_service=partner} = %v, want >= 2", n)
	}
	if n := h.counter(t, "minimesh_proxy_outbound_requests_total", "destination_service", "partner-impostor"); n != 1 {
		t.Errorf("outbound_requests_total{destination_service=partner-impostor} = %v, want 1", n)
	}
	// ... as ExternalServices, apart from any service of the mesh with
	// the same name.
	if all, ext := h.counter(t, "minimesh_proxy_outbound_requests_total", "destination_service", "partner")+
		h.counter(t, "minimesh_proxy_outbound_requests_total", "destination_service", "partner-impostor"),
		h.counter(t, "minimesh_proxy_outbound_requests_total", "destination_kind", "external"); ext < all {
		t.Errorf("outbound_requests_total{destination_kind=external} = %v, want at least the partner and partner-impostor calls: %v", ext, all)
	}
}
