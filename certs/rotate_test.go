package certs_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

func reload(t *testing.T, ca *certs.CA, clock certs.Clock) *certs.CA {
	t.Helper()
	loaded, err := certs.LoadCA(certs.CAConfig{TrustDomain: td, Clock: clock}, mustState(t, ca))
	if err != nil {
		t.Fatalf("LoadCA of own state: %v", err)
	}
	return loaded
}

func verifies(t *testing.T, chain []*x509.Certificate, ca *certs.CA, now time.Time) bool {
	t.Helper()
	_, _, err := certs.VerifyPeer(rawChain(chain), ca.Bundle(), now)
	return err == nil
}

func TestRotateIntermediate(t *testing.T) {
	clock := certstest.NewClock(t0)
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock, IntermediateTTL: 4 * time.Hour})
	id := mustWorkloadID(t, td, "shop", "web")
	before := issue(t, ca, id, 3*time.Hour)

	if ca.IntermediateNeedsRotation() {
		t.Fatal("fresh intermediate needs rotation")
	}
	clock.Add(2 * time.Hour)
	if !ca.IntermediateNeedsRotation() {
		t.Fatal("intermediate at half life does not need rotation")
	}
	rotated, err := ca.RotateIntermediate()
	if err != nil {
		t.Fatal(err)
	}
	if rotated.IntermediateNeedsRotation() {
		t.Error("rotated intermediate needs rotation")
	}
	if !rotated.Root().Equal(ca.Root()) || rotated.RootPin() != ca.RootPin() || !rotated.Bundle().Equal(ca.Bundle()) {
		t.Fatal("intermediate rotation changed the root or bundle")
	}
	if rotated.Intermediate().Equal(ca.Intermediate()) || !rotated.Intermediate().NotAfter.Equal(clock.Now().Add(4*time.Hour)) {
		t.Fatalf("new intermediate NotAfter %v", rotated.Intermediate().NotAfter)
	}
	if ca.Intermediate().NotAfter.Equal(rotated.Intermediate().NotAfter) {
		t.Fatal("receiver modified")
	}
	after := issue(t, reload(t, rotated, clock), id, 0)
	now := clock.Now()
	if !verifies(t, before.Certificates, rotated, now) || !verifies(t, after.Certificates, ca, now) {
		t.Fatal("SVIDs across an intermediate rotation do not verify with either bundle")
	}
	if !after.Certificates[1].Equal(rotated.Intermediate()) {
		t.Error("reloaded CA signs with the old intermediate")
	}
}

func TestRootRotationPhases(t *testing.T) {
	clock := certstest.NewClock(t0)
	ca0 := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock})
	id := mustWorkloadID(t, td, "shop", "web")
	old := issue(t, ca0, id, 0)
	now := clock.Now()

	if _, err := ca0.ActivateNextRoot(); !errors.Is(err, certs.ErrRotation) {
		t.Errorf("Activate without Prepare = %v", err)
	}
	if _, err := ca0.DropRetiredRoots(); !errors.Is(err, certs.ErrRotation) {
		t.Errorf("Drop without retired roots = %v", err)
	}

	// Phase 1: the next root is trusted, signing is unchanged.
	ca1, err := ca0.PrepareRootRotation()
	if err != nil {
		t.Fatal(err)
	}
	if ca0.NextRoot() != nil || len(ca0.Bundle().X509Authorities()) != 1 {
		t.Fatal("receiver modified")
	}
	ca1 = reload(t, ca1, clock)
	if ca1.NextRoot() == nil || len(ca1.Bundle().X509Authorities()) != 2 || !ca1.Root().Equal(ca0.Root()) || ca1.RootPin() != ca0.RootPin() {
		t.Fatalf("phase 1: next %v, %d roots", ca1.NextRoot(), len(ca1.Bundle().X509Authorities()))
	}
	p1 := issue(t, ca1, id, 0)
	if !verifies(t, p1.Certificates, ca0, now) {
		t.Fatal("phase 1 SVID does not verify with the old bundle")
	}
	if _, err := ca1.PrepareRootRotation(); !errors.Is(err, certs.ErrRotation) {
		t.Errorf("second Prepare = %v", err)
	}

	// Phase 2: the next root signs; the old one is retired but trusted.
	ca2, err := ca1.ActivateNextRoot()
	if err != nil {
		t.Fatal(err)
	}
	ca2 = reload(t, ca2, clock)
	if !ca2.Root().Equal(ca1.NextRoot()) || ca2.RootPin() == ca0.RootPin() || ca2.NextRoot() != nil {
		t.Fatal("phase 2 did not switch the root")
	}
	if r := ca2.RetiredRoots(); len(r) != 1 || !r[0].Equal(ca0.Root()) || len(ca2.Bundle().X509Authorities()) != 2 {
		t.Fatalf("phase 2 retired %d roots, bundle %d", len(r), len(ca2.Bundle().X509Authorities()))
	}
	p2 := issue(t, ca2, id, 0)
	switch {
	case !verifies(t, p2.Certificates, ca1, now):
		t.Fatal("phase 2 SVID does not verify with the phase 1 bundle")
	case verifies(t, p2.Certificates, ca0, now):
		t.Fatal("phase 2 SVID verifies with a bundle that never trusted the new root")
	case !verifies(t, old.Certificates, ca2, now):
		t.Fatal("old SVID does not verify with the phase 2 bundle")
	}

	// Phase 3: only the new root is trusted.
	ca3, err := ca2.DropRetiredRoots()
	if err != nil {
		t.Fatal(err)
	}
	ca3 = reload(t, ca3, clock)
	if len(ca3.Bundle().X509Authorities()) != 1 || len(ca3.RetiredRoots()) != 0 || !ca3.Root().Equal(ca2.Root()) {
		t.Fatal("phase 3 did not drop the retired root")
	}
	if verifies(t, old.Certificates, ca3, now) || !verifies(t, p2.Certificates, ca3, now) {
		t.Fatal("phase 3 bundle trusts the wrong roots")
	}
}

func TestLoadCARejectsRotationState(t *testing.T) {
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td})
	prepared, err := ca.PrepareRootRotation()
	if err != nil {
		t.Fatal(err)
	}
	activated, err := prepared.ActivateNextRoot()
	if err != nil {
		t.Fatal(err)
	}
	otherTDCA := mustNewCA(t, certs.CAConfig{TrustDomain: otherTD})
	pb := stateBlocks(t, prepared) // 4 active + 4 next
	ab := stateBlocks(t, activated)
	if len(pb) != 8 || len(ab) != 5 {
		t.Fatalf("state blocks: prepared %d, activated %d", len(pb), len(ab))
	}
	join := func(bs ...*pem.Block) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, pem.EncodeToMemory(b)...)
		}
		return out
	}
	retiredOther := &pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Minimesh-Role": "retired"}, Bytes: otherTDCA.Root().Raw}
	retiredInter := &pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Minimesh-Role": "retired"}, Bytes: ca.Intermediate().Raw}
	nextKeySwapped := *pb[5]
	nextKeySwapped.Bytes = pb[1].Bytes
	unknownRole := *pb[4]
	unknownRole.Headers = map[string]string{"Minimesh-Role": "spare"}

	tests := []struct {
		name  string
		state []byte
	}{
		{"next root with the active root's key", join(pb[0], pb[1], pb[2], pb[3], pb[4], &nextKeySwapped, pb[6], pb[7])},
		{"next root incomplete", join(pb[:7]...)},
		{"active blocks after next ones", join(pb[4], pb[5], pb[6], pb[7], pb[0], pb[1], pb[2], pb[3])},
		{"unknown role", join(pb[0], pb[1], pb[2], pb[3], &unknownRole, pb[5], pb[6], pb[7])},
		{"retired root of another trust domain", join(ab[0], ab[1], ab[2], ab[3], retiredOther)},
		{"retired intermediate (not self-signed)", join(ab[0], ab[1], ab[2], ab[3], retiredInter)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := certs.LoadCA(certs.CAConfig{TrustDomain: td}, tt.state); !errors.Is(err, certs.ErrInvalidCAState) {
				t.Fatalf("LoadCA = %v, want ErrInvalidCAState", err)
			}
		})
	}
}
