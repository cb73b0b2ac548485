package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

const webID = "spiffe://minimesh.local/ns/default/sa/web"

// start runs an admin server on a loopback port and returns its base URL
// and a client; cleanup stops both and checks for leaked goroutines.
func start(t *testing.T, cfg Config) (*Server, string, *http.Client) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return s, "http://" + ln.Addr().String(), &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func fetch(t *testing.T, c *http.Client, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestReadyFollowsFunc(t *testing.T) {
	var notReady atomic.Pointer[error]
	err := errors.New("SVID expired at 12:00, meshd unreachable")
	notReady.Store(&err)
	_, url, c := start(t, Config{Ready: func() error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	}})

	code, body := fetch(t, c, http.MethodGet, url+"/ready")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "meshd unreachable") {
		t.Errorf("not ready: got %d %q, want 503 with the reason", code, body)
	}
	notReady.Store(nil)
	if code, body := fetch(t, c, http.MethodGet, url+"/ready"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("ready: got %d %q", code, body)
	}
	if code, _ := fetch(t, c, http.MethodGet, url+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d", code)
	}
	if code, _ := fetch(t, c, http.MethodPost, url+"/ready"); code != http.StatusForbidden {
		t.Errorf("POST /ready without X-Mesh-Admin %d, want 403", code)
	}
	if code, _ := fetch(t, c, http.MethodGet, url+"/nope"); code != http.StatusNotFound {
		t.Errorf("/nope %d, want 404", code)
	}
}

func TestReadyDefaultsToHoldingValidSVID(t *testing.T) {
	clock := certstest.NewClock(time.Now())
	svids := certs.NewSVIDSource(clock)
	_, url, c := start(t, Config{SVID: svids})
	if code, _ := fetch(t, c, http.MethodGet, url+"/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("without SVID: %d, want 503", code)
	}
	svids.Set(certstest.SVID(t, certstest.NewCA(t, "minimesh.local"), webID))
	if code, _ := fetch(t, c, http.MethodGet, url+"/ready"); code != http.StatusOK {
		t.Errorf("with SVID: %d, want 200", code)
	}
	clock.Add(2 * time.Hour)
	if code, body := fetch(t, c, http.MethodGet, url+"/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "expired") {
		t.Errorf("with expired SVID: %d %q, want 503 saying expired", code, body)
	}
}

func TestCertsShowsSVIDAndBundle(t *testing.T) {
	ca := certstest.NewCA(t, "minimesh.local")
	svid := certstest.SVID(t, ca, webID)
	clock := certstest.NewClock(svid.Certificates[0].NotAfter.Add(-30 * time.Minute))
	svids := certs.NewSVIDSource(clock)
	svids.Set(svid)
	_, url, c := start(t, Config{SVID: svids, Bundle: certs.NewBundleSource(ca.Bundle()), Clock: clock})

	var got CertsResponse
	decode := func() {
		t.Helper()
		code, body := fetch(t, c, http.MethodGet, url+"/certs")
		if code != http.StatusOK {
			t.Fatalf("/certs %d: %s", code, body)
		}
		got = CertsResponse{}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
	}
	decode()
	leaf := svid.Certificates[0]
	if got.SVID == nil || got.SVID.SPIFFEID != webID || got.SVID.Serial != leaf.SerialNumber.Text(16) {
		t.Fatalf("svid = %+v, want %s serial %s", got.SVID, webID, leaf.SerialNumber.Text(16))
	}
	if !got.SVID.NotAfter.Equal(leaf.NotAfter) || got.SVID.ExpiresInSeconds != 1800 || got.SVID.ExpiresIn != "30m0s" {
		t.Errorf("validity = %+v, want not_after %s, expires in 30m", got.SVID, leaf.NotAfter)
	}
	root := ca.Root()
	if got.Bundle == nil || got.Bundle.TrustDomain != "minimesh.local" || len(got.Bundle.Roots) != 1 ||
		got.Bundle.Roots[0].Subject != root.Subject.String() || !got.Bundle.Roots[0].NotAfter.Equal(root.NotAfter) {
		t.Errorf("bundle = %+v, want the root %s", got.Bundle, root.Subject)
	}

	// Once expired the SVID is still shown, with the reason.
	clock.Add(time.Hour)
	decode()
	if got.SVID == nil || got.SVID.ExpiresInSeconds != -1800 || !strings.Contains(got.SVIDError, "expired") {
		t.Errorf("expired: svid %+v, error %q", got.SVID, got.SVIDError)
	}
}

func TestMetricsAndExtraHandlers(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctr := prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_test_total", Help: "test"})
	reg.MustRegister(ctr)
	ctr.Add(3)
	srv, url, c := start(t, Config{Registry: reg})
	srv.Handle("GET /config", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "v42")
	}))
	if code, body := fetch(t, c, http.MethodGet, url+"/metrics"); code != http.StatusOK || !strings.Contains(body, "minimesh_test_total 3") {
		t.Errorf("/metrics %d:\n%s", code, body)
	}
	if code, body := fetch(t, c, http.MethodGet, url+"/config"); code != http.StatusOK || body != "v42" {
		t.Errorf("/config %d %q", code, body)
	}
}

func TestConfigDefaultsToLoopback(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(s.cfg.Addr); !net.ParseIP(host).IsLoopback() {
		t.Errorf("default address %q is not loopback", s.cfg.Addr)
	}
	if s.cfg.ReadHeaderTimeout <= 0 || s.cfg.MaxHeaderBytes <= 0 {
		t.Errorf("limits not set: %+v", s.cfg)
	}
	for _, cfg := range []Config{{Addr: "no-port"}, {ReadHeaderTimeout: -1}} {
		if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

// /ready describes this proxy only: an SVID that does not chain to a root
// of the proxy's own bundle (a root rotation forced past it) is 503 with
// the reason; the same SVID against a bundle holding its root is ready.
func TestReadyRefusesAnSVIDItsOwnBundleDoesNotTrust(t *testing.T) {
	old, next := certstest.NewCA(t, "minimesh.local"), certstest.NewCA(t, "minimesh.local")
	svid := certstest.SVID(t, old, webID)
	clock := certstest.NewClock(svid.Certificates[0].NotBefore.Add(time.Minute))
	svids := certs.NewSVIDSource(clock)
	svids.Set(svid)
	bundle := certs.NewBundleSource(next.Bundle())
	_, url, c := start(t, Config{SVID: svids, Bundle: bundle, Clock: clock})
	if code, body := fetch(t, c, http.MethodGet, url+"/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "does not chain to a root of its own trust bundle") {
		t.Errorf("SVID of a root not in the bundle: %d %q, want 503 with the reason", code, body)
	}
	bundle.Set(old.Bundle())
	if code, body := fetch(t, c, http.MethodGet, url+"/ready"); code != http.StatusOK {
		t.Errorf("SVID of the bundle's root: %d %q, want 200", code, body)
	}
}
