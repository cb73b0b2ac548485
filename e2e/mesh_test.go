package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mesh is meshd, web and api apps, and their proxies: web calls api.
type mesh struct {
	meshd       *controlplanetest.Meshd
	web, api    *proxyHandle
	webApp      *app
	apiApp      *app
	webTok      *meshv1.CreateJoinTokenResponse
	apiTok      *meshv1.CreateJoinTokenResponse
	webDir      string
	apiDir      string
	viaWebToAPI string
}

func startMesh(t *testing.T, cfg controlplane.Config, uses uint32) *mesh {
	t.Helper()
	m := &mesh{meshd: controlplanetest.Start(t, cfg)}
	m.webApp, m.apiApp = startApp(t, "web"), startApp(t, "api")
	m.webTok = m.meshd.Token(t, "default", "web", uses)
	m.apiTok = m.meshd.Token(t, "default", "api", uses)
	m.webDir, m.apiDir = t.TempDir(), t.TempDir()
	m.api = startProxy(t, m.meshd, proxyOpts{service: "api", token: m.apiTok.Secret, pin: m.apiTok.CaPin, stateDir: m.apiDir, app: m.apiApp, public: true})
	m.web = startProxy(t, m.meshd, proxyOpts{service: "web", token: m.webTok.Secret, pin: m.webTok.CaPin, stateDir: m.webDir, app: m.webApp, upstreams: map[string]*proxyHandle{"api": m.api}})
	m.api.waitReady(t)
	m.web.waitReady(t)
	m.viaWebToAPI = "http://" + m.web.upstream["api"]
	return m
}

func TestWebCallsAPIOverMTLSAndPublicHTTPS(t *testing.T) {
	m := startMesh(t, controlplane.Config{}, 1)
	plain := &http.Client{Timeout: 10 * time.Second}

	got, err := get(plain, m.viaWebToAPI+"/hello", nil)
	if err != nil {
		t.Fatalf("web -> api: %v", err)
	}
	if got.Service != "api" || got.Path != "/hello" || got.PeerID != idOf("web").String() {
		t.Fatalf("api saw %+v, want path /hello from %s", got, idOf("web"))
	}

	// A spoofed peer header from the app is replaced by the verified identity.
	got, err = get(plain, m.viaWebToAPI+"/", http.Header{"X-Mesh-Peer-Id": {idOf("admin").String()}})
	if err != nil {
		t.Fatal(err)
	}
	if got.PeerID != idOf("web").String() {
		t.Fatalf("spoofed X-Mesh-Peer-Id reached the app: %q", got.PeerID)
	}

	// Public HTTPS for clients outside the mesh: no peer identity.
	got, err = get(publicClient(t, m.api.publicCert), "https://"+m.api.public+"/public", http.Header{"X-Mesh-Peer-Id": {idOf("web").String()}})
	if err != nil {
		t.Fatalf("public https: %v", err)
	}
	if got.Path != "/public" || got.PeerID != "" {
		t.Fatalf("public request: app saw %+v", got)
	}

	// Both proxies are registered and connected.
	eventually(t, 10*time.Second, "both proxies connected", func() error {
		resp, err := m.meshd.Operator(t).ListProxies(context.Background(), &meshv1.ListProxiesRequest{})
		if err != nil {
			return err
		}
		n := 0
		for _, p := range resp.Proxies {
			if p.Connected && p.Version == "test" && p.Address != "" && p.SvidExpiresAt != nil {
				n++
			}
		}
		if n != 2 {
			return errors.New("want 2 connected proxies")
		}
		return nil
	})
}

func TestInboundRefusesBadClients(t *testing.T) {
	m := startMesh(t, controlplane.Config{}, 1)
	url := "https://" + m.api.inbound + "/"
	bundle := certs.NewBundleSource(m.meshd.CA().Bundle())

	// No client certificate.
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}}
	if _, err := get(noCert, url, nil); err == nil {
		t.Error("a client without a certificate was served")
	}

	// A certificate from another trust domain.
	other := certstest.NewCA(t, "other.local")
	foreign := certs.NewSVIDSource(nil)
	foreign.Set(certstest.SVID(t, other, "spiffe://other.local/ns/default/sa/web"))
	if _, err := get(mtlsClient(foreign, bundle, idOf("api")), url, nil); err == nil {
		t.Error("a client from another trust domain was served")
	}

	// An expired certificate from our own CA.
	expiredSVID, err := m.meshd.CA().IssueSVID(idOf("web"), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	expired := certs.NewSVIDSource(fakeNow(time.Now().Add(-time.Minute)))
	expired.Set(expiredSVID)
	if _, err := get(mtlsClient(expired, bundle, idOf("api")), url, nil); err == nil {
		t.Error("a client with an expired certificate was served")
	}

	// And a valid one is served, proving the refusals were about the certificates.
	good, err := m.meshd.CA().IssueSVID(idOf("web"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src := certs.NewSVIDSource(nil)
	src.Set(good)
	got, err := get(mtlsClient(src, bundle, idOf("api")), url, http.Header{"X-Mesh-Peer-Id": {idOf("admin").String()}})
	if err != nil {
		t.Fatalf("valid client refused: %v", err)
	}
	if got.PeerID != idOf("web").String() {
		t.Fatalf("app saw peer %q", got.PeerID)
	}
}

type fakeNow time.Time

func (f fakeNow) Now() time.Time { return time.Time(f) }

// TestRotationDropsNoRequest renews SVIDs of about 6 s every ~3 s on both
// proxies while requests flow, and counts rotations by serial changes.
func TestRotationDropsNoRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("rotation runs for several SVID lifetimes")
	}
	m := startMesh(t, controlplane.Config{SVIDTTL: 6 * time.Second}, 1)
	plain := &http.Client{Timeout: 10 * time.Second}

	// A keep-alive mTLS connection opened before the first rotation.
	clientSVID, err := m.meshd.CA().IssueSVID(idOf("web"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src := certs.NewSVIDSource(nil)
	src.Set(clientSVID)
	dials := 0
	tc := certs.MTLSClientConfig(src, certs.NewBundleSource(m.meshd.CA().Bundle()), certs.AuthorizeID(idOf("api")), certs.TLSOptions{})
	keepAlive := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: tc, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials++
			d := &tls.Dialer{Config: tc}
			return d.DialContext(ctx, network, addr)
		},
	}}
	if _, err := get(keepAlive, "https://"+m.api.inbound+"/before", nil); err != nil {
		t.Fatal(err)
	}

	serials := map[string]map[string]bool{"web": {m.web.serial(): true}, "api": {m.api.serial(): true}}
	var requests, failures int
	deadline := time.Now().Add(60 * time.Second)
	for len(serials["web"]) < 4 || len(serials["api"]) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("not enough rotations in time: web %d, api %d serials", len(serials["web"]), len(serials["api"]))
		}
		if _, err := get(plain, m.viaWebToAPI+"/loop", nil); err != nil {
			failures++
			t.Errorf("request %d failed: %v", requests, err)
		}
		requests++
		serials["web"][m.web.serial()] = true
		serials["api"][m.api.serial()] = true
		time.Sleep(5 * time.Millisecond)
	}
	if failures != 0 {
		t.Fatalf("%d of %d requests failed across rotations", failures, requests)
	}
	if _, err := get(keepAlive, "https://"+m.api.inbound+"/after", nil); err != nil {
		t.Fatalf("keep-alive connection after rotations: %v", err)
	}
	if dials != 1 {
		t.Fatalf("the keep-alive client dialed %d times; the connection opened before the rotations was cut", dials)
	}
	t.Logf("%d requests, 0 failures, across %d web and %d api rotations", requests, len(serials["web"])-1, len(serials["api"])-1)
}

func TestRestartsRenewWithoutToken(t *testing.T) {
	m := startMesh(t, controlplane.Config{SVIDTTL: 4 * time.Second}, 1)
	plain := &http.Client{Timeout: 10 * time.Second}

	// meshd restarted on the same dir: the one-use tokens are spent, so new
	// serials can only come from renewals.
	m.meshd = m.meshd.Restart(t)
	before := map[string]string{"web": m.web.serial(), "api": m.api.serial()}
	eventually(t, 20*time.Second, "both proxies renew after meshd restart", func() error {
		if m.web.serial() == before["web"] || m.api.serial() == before["api"] {
			return errors.New("no new serial yet")
		}
		return nil
	})
	if _, err := get(plain, m.viaWebToAPI+"/", nil); err != nil {
		t.Fatalf("after meshd restart: %v", err)
	}

	// The web proxy restarted from its state dir, without a token.
	instance := m.web.Agent.InstanceID()
	m.web.stop()
	m.web = startProxy(t, m.meshd, proxyOpts{service: "web", stateDir: m.webDir, app: m.webApp, upstreams: map[string]*proxyHandle{"api": m.api}})
	m.web.waitReady(t)
	if m.web.Agent.InstanceID() != instance {
		t.Fatalf("instance ID changed across restart: %s -> %s", instance, m.web.Agent.InstanceID())
	}
	if _, err := get(plain, "http://"+m.web.upstream["api"]+"/", nil); err != nil {
		t.Fatalf("after proxy restart: %v", err)
	}
	eventually(t, 10*time.Second, "renewal recorded for the restarted instance", func() error {
		resp, err := m.meshd.Operator(t).ListCertificates(context.Background(), &meshv1.ListCertificatesRequest{})
		if err != nil {
			return err
		}
		for _, c := range resp.Certificates {
			if c.InstanceId == instance && c.IssuedBy == "renew" {
				return nil
			}
		}
		return errors.New("no renew record for the instance")
	})
}

func TestExpiryWhileMeshdDownThenRebootstrap(t *testing.T) {
	// web's token has a spare use; api's does not.
	meshd := controlplanetest.Start(t, controlplane.Config{SVIDTTL: 3 * time.Second})
	webTok := meshd.Token(t, "default", "web", 2)
	apiTok := meshd.Token(t, "default", "api", 1)
	web := startProxy(t, meshd, proxyOpts{service: "web", token: webTok.Secret, pin: webTok.CaPin, stateDir: t.TempDir(), app: startApp(t, "web")})
	api := startProxy(t, meshd, proxyOpts{service: "api", token: apiTok.Secret, pin: apiTok.CaPin, stateDir: t.TempDir(), app: startApp(t, "api")})
	web.waitReady(t)
	api.waitReady(t)

	meshd.Stop()
	eventually(t, 15*time.Second, "web not ready after its SVID expired", func() error {
		if web.Agent.Ready() == nil {
			return errors.New("still ready")
		}
		return nil
	})
	resp, err := http.Get("http://" + web.admin + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready = %d with an expired SVID", resp.StatusCode)
	}
	// New handshakes are refused while expired.
	probe, _ := meshd.CA().IssueSVID(idOf("probe"), time.Hour)
	src := certs.NewSVIDSource(nil)
	src.Set(probe)
	if _, err := get(mtlsClient(src, certs.NewBundleSource(meshd.CA().Bundle()), idOf("web")), "https://"+web.inbound+"/", nil); err == nil {
		t.Fatal("a proxy with an expired SVID accepted a handshake")
	}

	_ = meshd.Restart(t)
	web.waitReady(t)
	eventually(t, 15*time.Second, "api says why it cannot re-bootstrap", func() error {
		err := api.Agent.Ready()
		if err == nil || !strings.Contains(err.Error(), "no uses left") {
			return errors.New("want a not-ready reason naming the spent token, got " + errString(err))
		}
		return nil
	})
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
