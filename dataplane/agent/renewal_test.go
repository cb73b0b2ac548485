package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// bootstrapped is an agent of service web that bootstrapped against m.
func bootstrapped(t *testing.T, m *controlplanetest.Meshd) *Agent {
	t.Helper()
	tok := m.Token(t, "default", "web", 1)
	a, err := New(Config{ControlPlane: m.Addr, Token: tok.Secret, CAPin: tok.Token.GetCaPin(), Service: "web", StateDir: t.TempDir() + "/state"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.refresh(testCtx(t)); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	return a
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRateLimitedRenewWaitsAtLeastTheRetryDelay(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	a := bootstrapped(t, m)
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		err = a.refresh(testCtx(t))
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("renewing in a loop: %v, want ResourceExhausted", err)
	}
	d := retryDelay(err)
	if d <= 0 {
		t.Fatalf("no retry delay in %v", err)
	}
	// The backoff alone would retry in about BackoffMin (500 ms).
	if wait := a.nextWait(err, a.cfg.BackoffMin); wait < d {
		t.Fatalf("the agent would retry in %s, before meshd's retry delay %s", wait, d)
	}
	// A delay past the SVID's expiry is still honoured: retrying earlier
	// would be refused again.
	if wait := a.nextWait(err, a.cfg.BackoffMax); wait < d {
		t.Fatalf("with the maximum backoff: %s < %s", wait, d)
	}
}

// rootsOf is a snapshot's trust_bundle for the CA's bundle.
func rootsOf(m *controlplanetest.Meshd) [][]byte {
	var out [][]byte
	for _, c := range m.CA().Bundle().X509Authorities() {
		out = append(out, c.Raw)
	}
	return out
}

func hasRoot(roots []*x509.Certificate, root *x509.Certificate) bool {
	for _, r := range roots {
		if r.Equal(root) {
			return true
		}
	}
	return false
}

// lateReply is a Renew reply obtained now and installed later.
type lateReply struct {
	svid *meshv1.X509SVID
	key  *ecdsa.PrivateKey
	gen  uint64 // the bundle generation when the request was sent
}

func renewNow(t *testing.T, m *controlplanetest.Meshd, a *Agent) lateReply {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, a.svid.Current().ID)
	if err != nil {
		t.Fatal(err)
	}
	gen := a.bundleGeneration()
	resp, err := meshv1.NewIdentityServiceClient(m.DialAs(t, a.svid.Current())).Renew(testCtx(t), &meshv1.RenewRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	return lateReply{resp.Svid, key, gen}
}

func TestLateRenewReplyCannotPutBackADroppedRoot(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{RotationCheck: time.Hour})
	a := bootstrapped(t, m)
	oldRoot := m.CA().Root()

	// Phase 1: the new root joins the bundle; the old one still signs.
	if _, err := m.RotateCA(false); err != nil {
		t.Fatal(err)
	}
	fromOld := renewNow(t, m, a)
	// Phase 2: the new root signs; the old one is retired, still trusted.
	if _, err := m.RotateCA(true); err != nil {
		t.Fatal(err)
	}
	fromNew := renewNow(t, m, a)
	if !hasRoot(a.bundle.Bundle().X509Authorities(), oldRoot) {
		t.Fatal("setup: the old root is not in the agent's bundle yet")
	}
	// Phase 3: the old root leaves the bundle, and the proxy applies the
	// snapshot that says so before the late replies arrive.
	if _, err := m.RotateCA(true); err != nil {
		t.Fatal(err)
	}
	if _, err := a.apply(&meshv1.Snapshot{Version: "old-root-dropped", TrustBundle: rootsOf(m)}, false); err != nil {
		t.Fatal(err)
	}
	if hasRoot(a.bundle.Bundle().X509Authorities(), oldRoot) {
		t.Fatal("setup: the snapshot did not drop the old root")
	}
	before := a.svid.Current().Certificates[0]

	// A late reply whose SVID chains to the dropped root is not installed.
	if err := a.install(fromOld.svid, fromOld.key, fromOld.gen); err == nil {
		t.Fatal("an SVID chaining to a root the newest snapshot dropped was installed")
	}
	if !a.svid.Current().Certificates[0].Equal(before) {
		t.Fatal("the refused reply replaced the SVID")
	}
	// A late reply from the new root is installed, but its bundle (which
	// still lists the old root) does not replace the snapshot's.
	if err := a.install(fromNew.svid, fromNew.key, fromNew.gen); err != nil {
		t.Fatalf("a late reply from the active root: %v", err)
	}
	if hasRoot(a.bundle.Bundle().X509Authorities(), oldRoot) {
		t.Fatal("a late Renew reply put back the root the newest snapshot dropped")
	}
	if got := a.svid.Current().Certificates[0]; got.Equal(before) {
		t.Fatal("the reply's SVID is not in use")
	}
	// A reply to a request sent after the snapshot sets the bundle as before.
	if err := a.refresh(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if hasRoot(a.bundle.Bundle().X509Authorities(), oldRoot) {
		t.Fatal("the old root came back")
	}
}
