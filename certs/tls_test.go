package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

func issue(t *testing.T, ca *certs.CA, id spiffeid.ID, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	svid, err := ca.IssueSVID(id, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

func peerSerial(c *tls.Conn) string {
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestMTLSRotationKeepsConnections(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	serverID, clientID := mustWorkloadID(t, td, "shop", "db"), mustWorkloadID(t, td, "shop", "web")
	serverSVIDs := certs.NewSVIDSource(nil)
	v1 := issue(t, ca, serverID, 0)
	serverSVIDs.Set(v1)
	bundle := certs.NewBundleSource(ca.Bundle())

	srv := startTLSServer(t, certs.MTLSServerConfig(serverSVIDs, bundle, certs.AuthorizeMemberOf(td), certs.TLSOptions{}))
	cliCfg := certs.MTLSClientConfig(issue(t, ca, clientID, 0), bundle, certs.AuthorizeID(serverID), certs.TLSOptions{})

	c1, err := dial(t, srv.addr(), cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	if c1.ConnectionState().Version != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", c1.ConnectionState().Version)
	}
	if got := peerSerial(c1); got != v1.Certificates[0].SerialNumber.String() {
		t.Fatalf("first handshake saw serial %s, want v1", got)
	}
	st := <-srv.states
	if id, err := x509svid.IDFromCert(st.PeerCertificates[0]); err != nil || id != clientID {
		t.Errorf("server saw client %v, %v", id, err)
	}

	v2 := issue(t, ca, serverID, 0)
	serverSVIDs.Set(v2)
	if serverSVIDs.Current() != v2 {
		t.Fatal("Current is not the SVID just set")
	}

	if err := echo(c1); err != nil {
		t.Fatalf("established connection broke after rotation: %v", err)
	}
	c2, err := dial(t, srv.addr(), cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := peerSerial(c2); got != v2.Certificates[0].SerialNumber.String() {
		t.Fatalf("handshake after Set saw serial %s, want v2 %s", got, v2.Certificates[0].SerialNumber)
	}
	if err := echo(c1); err != nil {
		t.Fatalf("old connection: %v", err)
	}
}

func TestExpiredSVIDRefusesNewHandshakes(t *testing.T) {
	clock := certstest.NewClock(time.Now())
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock})
	serverID, clientID := mustWorkloadID(t, td, "shop", "db"), mustWorkloadID(t, td, "shop", "web")
	opts := certs.TLSOptions{Clock: clock}
	bundle := certs.NewBundleSource(ca.Bundle())

	serverSVIDs := certs.NewSVIDSource(clock)
	serverSVIDs.Set(issue(t, ca, serverID, time.Hour))
	clientSVIDs := certs.NewSVIDSource(clock)
	clientSVIDs.Set(issue(t, ca, clientID, 2*time.Hour))

	srv := startTLSServer(t, certs.MTLSServerConfig(serverSVIDs, bundle, nil, opts))
	cliCfg := certs.MTLSClientConfig(clientSVIDs, bundle, certs.AuthorizeID(serverID), opts)
	c1, err := dial(t, srv.addr(), cliCfg)
	if err != nil {
		t.Fatal(err)
	}

	clock.Add(time.Hour) // the server's SVID is now expired; the client's is not
	if _, err := serverSVIDs.GetX509SVID(); !errors.Is(err, certs.ErrSVIDExpired) {
		t.Fatalf("GetX509SVID = %v, want ErrSVIDExpired", err)
	}
	if serverSVIDs.Current() == nil {
		t.Fatal("Current dropped the expired SVID")
	}
	if _, err := dial(t, srv.addr(), cliCfg); err == nil {
		t.Fatal("new handshake with an expired server SVID succeeded")
	}
	if err := srv.serverErr(t); !errors.Is(err, certs.ErrSVIDExpired) {
		t.Errorf("server handshake error = %v, want ErrSVIDExpired", err)
	}
	if err := echo(c1); err != nil {
		t.Fatalf("established connection cut by expiry: %v", err)
	}

	// A fresh server SVID: handshakes work again. Then the client's expires.
	serverSVIDs.Set(issue(t, ca, serverID, 4*time.Hour))
	if _, err := dial(t, srv.addr(), cliCfg); err != nil {
		t.Fatalf("after renewal: %v", err)
	}
	clock.Add(time.Hour)
	if _, err := dial(t, srv.addr(), cliCfg); !errors.Is(err, certs.ErrSVIDExpired) {
		t.Fatalf("client with expired SVID: %v, want ErrSVIDExpired", err)
	}
}

func TestPeerCertificateExpiryUsesClock(t *testing.T) {
	// The server's source has no clock, so it keeps serving its certificate;
	// the client, whose clock is past the certificate's NotAfter, refuses it.
	clock := certstest.NewClock(time.Now())
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock})
	serverID := mustWorkloadID(t, td, "shop", "db")
	srvSVID := certs.NewSVIDSource(nil)
	srvSVID.Set(issue(t, ca, serverID, time.Hour))
	srv := startTLSServer(t, certs.MTLSServerConfig(srvSVID, ca.Bundle(), nil, certs.TLSOptions{}))

	clock.Add(2 * time.Hour)
	cli := certs.MTLSClientConfig(issue(t, ca, mustWorkloadID(t, td, "shop", "web"), 0), ca.Bundle(), nil, certs.TLSOptions{Clock: clock})
	_, err := dial(t, srv.addr(), cli)
	if !errors.Is(err, certs.ErrPeerUnverified) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("dial = %v, want ErrPeerUnverified saying expired", err)
	}
}

func TestMTLSServerRefuses(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	sameTDOtherCA := certstest.NewCA(t, "example.org")
	otherCA := certstest.NewCA(t, "other.org")
	serverID := mustWorkloadID(t, td, "shop", "db")
	serverSVID := issue(t, ca, serverID, 0)
	srvBundle := ca.Bundle()

	// A client that trusts the server correctly but presents cert from elsewhere.
	clientCfg := func(svid *x509svid.SVID) *tls.Config {
		return certs.MTLSClientConfig(svid, srvBundle, certs.AuthorizeID(serverID), certs.TLSOptions{})
	}
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} //nolint:gosec // test client

	tests := []struct {
		name      string
		authorize func(spiffeid.ID) error
		client    *tls.Config
		want      error  // wrapped by the server's handshake error; nil = any error
		reason    string // in the server's error message
	}{
		{"client from another trust domain", nil, clientCfg(certstest.SVID(t, otherCA, "spiffe://other.org/ns/shop/sa/web")), certs.ErrPeerUnverified, "wrong trust domain"},
		{"client from another CA of our trust domain", nil, clientCfg(certstest.SVID(t, sameTDOtherCA, "spiffe://example.org/ns/shop/sa/web")), certs.ErrPeerUnverified, "unknown authority"},
		{"client without certificate", nil, noCert, nil, ""},
		{"client not authorized", certs.AuthorizeID(certs.OperatorID(td)), clientCfg(certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/web")), certs.ErrUnauthorized, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTLSServer(t, certs.MTLSServerConfig(serverSVID, srvBundle, tt.authorize, certs.TLSOptions{}))
			if _, err := dial(t, srv.addr(), tt.client); err == nil {
				t.Fatal("client was accepted")
			}
			err := srv.serverErr(t)
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("server error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("server error %q does not say %q", err, tt.reason)
			}
		})
	}

	// And the same server accepts a proper client.
	srv := startTLSServer(t, certs.MTLSServerConfig(serverSVID, srvBundle, nil, certs.TLSOptions{}))
	if _, err := dial(t, srv.addr(), clientCfg(certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/web"))); err != nil {
		t.Fatalf("proper client refused: %v", err)
	}
}

func TestMTLSClientRefuses(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	otherCA := certstest.NewCA(t, "example.org")
	serverID := mustWorkloadID(t, td, "shop", "db")
	clientSVID := certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/web")

	tests := []struct {
		name   string
		server *x509svid.SVID
		want   error
	}{
		{"server with the wrong ID", certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/cache"), certs.ErrUnauthorized},
		{"server of an untrusted CA", certstest.SVID(t, otherCA, serverID.String()), certs.ErrPeerUnverified},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTLSServer(t, certs.MTLSServerConfig(tt.server, otherCA.Bundle(), nil, certs.TLSOptions{}))
			_, err := dial(t, srv.addr(), certs.MTLSClientConfig(clientSVID, ca.Bundle(), certs.AuthorizeID(serverID), certs.TLSOptions{}))
			if !errors.Is(err, tt.want) {
				t.Fatalf("dial = %v, want %v", err, tt.want)
			}
		})
	}

	// An empty source refuses to handshake as a client.
	srv := startTLSServer(t, certs.MTLSServerConfig(certstest.SVID(t, ca, serverID.String()), ca.Bundle(), nil, certs.TLSOptions{}))
	_, err := dial(t, srv.addr(), certs.MTLSClientConfig(certs.NewSVIDSource(nil), ca.Bundle(), nil, certs.TLSOptions{}))
	if !errors.Is(err, certs.ErrNoSVID) {
		t.Fatalf("dial with empty source = %v, want ErrNoSVID", err)
	}
}

func TestBundleRotation(t *testing.T) {
	oldCA := certstest.NewCA(t, "example.org")
	newCA := certstest.NewCA(t, "example.org")
	serverID := mustWorkloadID(t, td, "shop", "db")
	bundle := certs.NewBundleSource(oldCA.Bundle())
	srvSVIDs := certs.NewSVIDSource(nil)
	srvSVIDs.Set(certstest.SVID(t, oldCA, serverID.String()))
	srv := startTLSServer(t, certs.MTLSServerConfig(srvSVIDs, bundle, nil, certs.TLSOptions{}))

	newClient := certs.MTLSClientConfig(certstest.SVID(t, newCA, "spiffe://example.org/ns/shop/sa/web"), bundle, nil, certs.TLSOptions{})
	if _, err := dial(t, srv.addr(), newClient); err == nil {
		t.Fatal("client of the not-yet-trusted root accepted")
	}
	<-srv.errs

	// Phase 1: trust both roots.
	both := oldCA.Bundle()
	both.AddX509Authority(newCA.Root())
	bundle.Set(both)
	if _, err := dial(t, srv.addr(), newClient); err != nil {
		t.Fatalf("client of the added root refused: %v", err)
	}
	// Phase 3: drop the old root. The server must be on the new root too.
	srvSVIDs.Set(certstest.SVID(t, newCA, serverID.String()))
	bundle.Set(newCA.Bundle())
	oldClient := certs.MTLSClientConfig(certstest.SVID(t, oldCA, "spiffe://example.org/ns/shop/sa/web"), bundle, nil, certs.TLSOptions{})
	if _, err := dial(t, srv.addr(), oldClient); err == nil {
		t.Fatal("client of the dropped root accepted")
	}
}

func TestOptionalClientServerConfig(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	srvSVIDs := certs.NewSVIDSource(nil)
	srvSVIDs.Set(issue(t, ca, certs.MeshdID(td), 0))
	srv := startTLSServer(t, certs.OptionalClientServerConfig(srvSVIDs))
	bundle := ca.Bundle()

	// Without a client certificate the handshake succeeds; VerifyPeer says no.
	anon := certs.MTLSClientConfig(certs.NewSVIDSource(nil), bundle, certs.AuthorizeID(certs.MeshdID(td)), certs.TLSOptions{})
	anon.GetClientCertificate = nil
	if _, err := dial(t, srv.addr(), anon); err != nil {
		t.Fatalf("client without certificate: %v", err)
	}
	st := <-srv.states
	if _, _, err := certs.VerifyPeerCertificates(st.PeerCertificates, bundle, time.Now()); !errors.Is(err, certs.ErrPeerUnverified) {
		t.Errorf("VerifyPeerCertificates(no certs) = %v", err)
	}

	// With one, the layer above can verify it.
	clientID := mustWorkloadID(t, td, "shop", "web")
	withCert := certs.MTLSClientConfig(issue(t, ca, clientID, 0), bundle, certs.AuthorizeID(certs.MeshdID(td)), certs.TLSOptions{})
	if _, err := dial(t, srv.addr(), withCert); err != nil {
		t.Fatal(err)
	}
	st = <-srv.states
	var raw [][]byte
	for _, c := range st.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	id, chain, err := certs.VerifyPeer(raw, bundle, time.Time{})
	if err != nil || id != clientID || !chain[len(chain)-1].Equal(ca.Root()) {
		t.Fatalf("VerifyPeer = %v, %d certs, %v", id, len(chain), err)
	}

	// A client certificate from an untrusted CA is not refused in the handshake
	// but VerifyPeer refuses it.
	rogue := certstest.NewCA(t, "example.org")
	if _, err := dial(t, srv.addr(), certs.MTLSClientConfig(certstest.SVID(t, rogue, clientID.String()), bundle, nil, certs.TLSOptions{})); err != nil {
		t.Fatal(err)
	}
	st = <-srv.states
	if _, _, err := certs.VerifyPeerCertificates(st.PeerCertificates, bundle, time.Time{}); !errors.Is(err, certs.ErrPeerUnverified) {
		t.Errorf("VerifyPeerCertificates(rogue) = %v", err)
	}
}

func TestPinnedClientConfig(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	rogueCA := certstest.NewCA(t, "example.org")
	meshd := certs.MeshdID(td)
	serving, err := ca.IssueServingSVID(meshd, 0)
	if err != nil {
		t.Fatal(err)
	}
	// An impostor that appends our (public) root to its own chain.
	impostor, err := rogueCA.IssueSVID(meshd, 0)
	if err != nil {
		t.Fatal(err)
	}
	impostor.Certificates = append(impostor.Certificates, ca.Root())
	// An impostor presenting a self-signed leaf with our root's pin is
	// impossible without the root key; one presenting our root alone is not.
	rootOnly := &x509svid.SVID{ID: meshd, Certificates: []*x509.Certificate{serving.Certificates[0], serving.Certificates[1], ca.Root()}, PrivateKey: serving.PrivateKey}

	tests := []struct {
		name     string
		server   *x509svid.SVID
		pin      string
		serverID spiffeid.ID
		ok       bool
		says     string // in the error, when set
	}{
		{"right pin", serving, ca.RootPin(), meshd, true, ""},
		{"right pin, uppercase hex", serving, "sha256:" + strings.ToUpper(strings.TrimPrefix(ca.RootPin(), "sha256:")), meshd, true, ""},
		{"right pin, full chain in any order", rootOnly, ca.RootPin(), meshd, true, ""},
		{"wrong pin", serving, rogueCA.RootPin(), meshd, false, ""},
		{"pin of the intermediate (not self-signed)", serving, certs.SPKIPin(ca.Intermediate()), meshd, false, ""},
		{"right pin, wrong server ID", serving, ca.RootPin(), certs.OperatorID(td), false, ""},
		{"right pin, another trust domain expected", serving, ca.RootPin(), certs.MeshdID(spiffeid.RequireTrustDomainFromString("other.test")), false,
			`the server is of trust domain "example.org", this client expects "other.test"`},
		{"server does not send the root", certstest.SVID(t, ca, meshd.String()), ca.RootPin(), meshd, false, ""},
		{"impostor chain with our root appended", impostor, ca.RootPin(), meshd, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := certs.NewSVIDSource(nil)
			src.Set(tt.server)
			srv := startTLSServer(t, certs.OptionalClientServerConfig(src))
			cfg, err := certs.PinnedClientConfig(tt.pin, tt.serverID, certs.TLSOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c, err := dial(t, srv.addr(), cfg)
			if tt.ok {
				if err != nil {
					t.Fatalf("dial = %v", err)
				}
				if n := len(c.ConnectionState().PeerCertificates); n != 3 {
					t.Errorf("server sent %d certificates", n)
				}
				if st := <-srv.states; len(st.PeerCertificates) != 0 {
					t.Error("pinned client presented a certificate")
				}
				return
			}
			if !errors.Is(err, certs.ErrPinMismatch) {
				t.Fatalf("dial = %v, want ErrPinMismatch", err)
			}
			if tt.says != "" && !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("dial = %v, want it to say %q", err, tt.says)
			}
		})
	}

	if _, err := certs.PinnedClientConfig("sha256:00", meshd, certs.TLSOptions{}); !errors.Is(err, certs.ErrInvalidPin) {
		t.Errorf("bad pin: %v", err)
	}
	if _, err := certs.PinnedClientConfig(ca.RootPin(), spiffeid.ID{}, certs.TLSOptions{}); !errors.Is(err, certs.ErrInvalidID) {
		t.Errorf("zero server ID: %v", err)
	}
}

func TestPinnedClientConfigUsesClock(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	serving, err := ca.IssueServingSVID(certs.MeshdID(td), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := startTLSServer(t, certs.OptionalClientServerConfig(serving))
	clock := certstest.NewClock(time.Now().Add(2 * time.Hour))
	cfg, err := certs.PinnedClientConfig(ca.RootPin(), certs.MeshdID(td), certs.TLSOptions{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, srv.addr(), cfg); !errors.Is(err, certs.ErrPinMismatch) {
		t.Fatalf("dial with clock past NotAfter = %v, want ErrPinMismatch", err)
	}
}

func TestTLSConfigsRequireTLS13(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	svid := certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/db")
	pinned, err := certs.PinnedClientConfig(ca.RootPin(), certs.MeshdID(td), certs.TLSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfgs := map[string]*tls.Config{
		"MTLSServerConfig":           certs.MTLSServerConfig(svid, ca.Bundle(), nil, certs.TLSOptions{}),
		"MTLSClientConfig":           certs.MTLSClientConfig(svid, ca.Bundle(), nil, certs.TLSOptions{}),
		"OptionalClientServerConfig": certs.OptionalClientServerConfig(svid),
		"PinnedClientConfig":         pinned,
	}
	for name, cfg := range cfgs {
		if cfg.MinVersion != tls.VersionTLS13 {
			t.Errorf("%s: MinVersion %x", name, cfg.MinVersion)
		}
	}
	// And a TLS 1.2 client really is refused.
	srv := startTLSServer(t, cfgs["MTLSServerConfig"])
	old := certs.MTLSClientConfig(svid, ca.Bundle(), nil, certs.TLSOptions{})
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if _, err := dial(t, srv.addr(), old); err == nil {
		t.Fatal("TLS 1.2 handshake succeeded")
	}
}

func TestSources(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	s := certs.NewSVIDSource(nil)
	if _, err := s.GetX509SVID(); !errors.Is(err, certs.ErrNoSVID) {
		t.Errorf("empty GetX509SVID = %v", err)
	}
	if s.Current() != nil {
		t.Error("empty Current != nil")
	}
	svid := certstest.SVID(t, ca, "spiffe://example.org/ns/a/sa/b")
	s.Set(svid)
	if got, err := s.GetX509SVID(); err != nil || got != svid {
		t.Errorf("GetX509SVID = %v, %v", got, err)
	}
	s.Set(nil)
	if _, err := s.GetX509SVID(); !errors.Is(err, certs.ErrNoSVID) {
		t.Errorf("after Set(nil) = %v", err)
	}

	b := certs.NewBundleSource(nil)
	if _, err := b.GetX509BundleForTrustDomain(td); !errors.Is(err, certs.ErrNoBundle) {
		t.Errorf("empty bundle source = %v", err)
	}
	b.Set(ca.Bundle())
	if got, err := b.GetX509BundleForTrustDomain(td); err != nil || !got.Equal(ca.Bundle()) {
		t.Errorf("GetX509BundleForTrustDomain = %v", err)
	}
	if _, err := b.GetX509BundleForTrustDomain(otherTD); !errors.Is(err, certs.ErrNoBundle) {
		t.Errorf("other trust domain = %v", err)
	}
	if b.Bundle() == nil || b.Bundle().TrustDomain() != td {
		t.Error("Bundle()")
	}
	var _ x509bundle.Source = b
}

func TestServersDoNotResumeSessions(t *testing.T) {
	// Every connection is a full handshake, so the client's current SVID is
	// checked against the current bundle and clock each time.
	ca := certstest.NewCA(t, "example.org")
	svid := certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/db")
	for name, srvCfg := range map[string]*tls.Config{
		"MTLSServerConfig":           certs.MTLSServerConfig(svid, ca.Bundle(), nil, certs.TLSOptions{}),
		"OptionalClientServerConfig": certs.OptionalClientServerConfig(svid),
	} {
		t.Run(name, func(t *testing.T) {
			srv := startTLSServer(t, srvCfg)
			cli := certs.MTLSClientConfig(svid, ca.Bundle(), nil, certs.TLSOptions{})
			cli.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			for i := range 3 {
				c, err := dial(t, srv.addr(), cli)
				if err != nil {
					t.Fatal(err)
				}
				if c.ConnectionState().DidResume {
					t.Fatalf("connection %d resumed a session", i)
				}
				_ = c.Close()
			}
		})
	}
}
