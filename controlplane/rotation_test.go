package controlplane_test

import (
	"testing"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// The rotation's phase lives in the stored CA state: a restarted meshd
// resumes it, and --force walks the remaining phases.
func TestRootRotationResumesAfterRestart(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	oldPin := m.RootPin()
	before := m.Token(t, "default", "web", 1) // made under the old root
	if before.CaPin != oldPin || before.Token.CaPin != oldPin {
		t.Fatalf("token pin %q (listed %q), want the root's %q", before.CaPin, before.Token.CaPin, oldPin)
	}
	st, err := m.Operator(t).RotateCA(ctx(t), &meshv1.RotateCARequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status.Phase != controlplane.PhasePrepared || st.Status.Next == nil {
		t.Fatalf("after rotate: %+v", st.Status)
	}
	next := st.Status.Next.Pin
	// A second rotate without --force is refused while one is under way.
	if _, err := m.Operator(t).RotateCA(ctx(t), &meshv1.RotateCARequest{}); err == nil {
		t.Fatal("a second rotation started over the first")
	}

	m = m.Restart(t)
	got, err := m.Operator(t).CAStatus(ctx(t), &meshv1.CAStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != controlplane.PhasePrepared || got.Next.GetPin() != next || got.Active.Pin != oldPin {
		t.Fatalf("after restart: phase %s next %s active %s", got.Phase, got.Next.GetPin(), got.Active.Pin)
	}
	// Bundles now carry both roots.
	if n := len(m.CA().Bundle().X509Authorities()); n != 2 {
		t.Fatalf("bundle has %d roots in phase 1, want 2", n)
	}

	if _, err := m.Operator(t).RotateCA(ctx(t), &meshv1.RotateCARequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	got, _ = m.Operator(t).CAStatus(ctx(t), &meshv1.CAStatusRequest{})
	if got.Phase != controlplane.PhaseActivated || got.Active.Pin != next || len(got.Retired) != 1 {
		t.Fatalf("after force: %+v", got)
	}
	if m.RootPin() != next {
		t.Fatalf("new tokens would pin %s, want the new root %s", m.RootPin(), next)
	}
	// The token made before carries the retired root's pin: CAStatus counts
	// it, the token list marks it; one made now does not.
	after := m.Token(t, "default", "api", 1)
	if got.StaleTokens != 1 {
		t.Errorf("stale tokens %d, want 1", got.StaleTokens)
	}
	list, err := m.Operator(t).ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range list.Tokens {
		if want := tok.Id == before.Token.Id; tok.StalePin != want || (tok.Id == after.Token.Id && tok.CaPin != next) {
			t.Errorf("token %s: stale %v, pin %s", tok.Id, tok.StalePin, tok.CaPin)
		}
	}
	m = m.Restart(t)
	if _, err := m.Operator(t).RotateCA(ctx(t), &meshv1.RotateCARequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	got, _ = m.Operator(t).CAStatus(ctx(t), &meshv1.CAStatusRequest{})
	if got.Phase != controlplane.PhaseIdle || got.Active.Pin != next || len(got.Retired) != 0 {
		t.Fatalf("after the last phase: %+v", got)
	}
	if n := len(m.CA().Bundle().X509Authorities()); n != 1 {
		t.Fatalf("bundle has %d roots after the rotation, want 1", n)
	}
}
