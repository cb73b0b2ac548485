package agent_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/dataplane/agent"
)

// Ready is this proxy's own truth: an SVID that does not chain to a root
// of its own bundle (the root it chains to was dropped: a rotation forced
// past it) makes it unready with the reason, though the SVID is unexpired.
func TestReadyRefusesAnSVIDItsOwnBundleDoesNotTrust(t *testing.T) {
	old, next := certstest.NewCA(t, "minimesh.local"), certstest.NewCA(t, "minimesh.local")
	svid := certstest.SVID(t, old, "spiffe://minimesh.local/ns/default/sa/web")
	dir := filepath.Join(t.TempDir(), "state")
	// A first agent makes the state dir (ours, 0700).
	if _, err := agent.New(agent.Config{ControlPlane: "127.0.0.1:1", Service: "web", StateDir: dir}); err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteSVID(dir, svid, next.Bundle()); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{ControlPlane: "127.0.0.1:1", Service: "web", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Ready()
	if !errors.Is(err, agent.ErrUntrustedSVID) || !strings.Contains(err.Error(), next.RootPin()) {
		t.Fatalf("Ready with an SVID of a root not in its bundle = %v, want ErrUntrustedSVID naming the bundle's root %s", err, next.RootPin())
	}
	// The same SVID against a bundle that holds its root: ready.
	a.BundleSource().Set(old.Bundle())
	if err := a.Ready(); err != nil {
		t.Fatalf("Ready with the SVID's root in the bundle: %v", err)
	}
	// Expired: unready, saying so.
	if err := agent.CheckOwnSVID(svid, old.Bundle(), svid.Certificates[0].NotAfter.Add(time.Second)); !errors.Is(err, agent.ErrNoIdentity) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired SVID: %v", err)
	}
}
