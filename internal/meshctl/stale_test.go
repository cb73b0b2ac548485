package meshctl_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// An operator credential copied before a root rotation gets an
// explanation and the fix, not a raw "x509: unknown authority"; meshctl
// check fails on it with the same explanation.
func TestStaleCredentialIsExplained(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	stale := filepath.Join(t.TempDir(), "operator")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"svid.pem", "svid_key.pem", "bundle.pem"} {
		b, err := os.ReadFile(filepath.Join(m.OperatorCredentialDir(), f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stale, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Rotate all the way with no proxy: prepare, activate, drop.
	if _, err := m.Operator(t).RotateCA(ctx, &meshv1.RotateCARequest{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := m.Operator(t).RotateCA(ctx, &meshv1.RotateCARequest{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) (string, error) {
		return runWith(t, m.Addr, stale, args...)
	}
	_, err := run("token", "list")
	if err == nil || !strings.Contains(err.Error(), "issued before a root rotation") || !strings.Contains(err.Error(), "meshd operator issue") {
		t.Fatalf("a stale credential: %v", err)
	}
	out, err := run("check")
	if err == nil || !strings.Contains(out, "✖ meshd is reachable") || !strings.Contains(out, "issued before a root rotation") {
		t.Fatalf("check with a stale credential: %v\n%s", err, out)
	}
	// With meshd's current bundle but the old certificate, meshctl trusts
	// meshd and meshd refuses the certificate, saying why.
	b, err := os.ReadFile(filepath.Join(m.OperatorCredentialDir(), "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, "bundle.pem"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run("token", "list"); err == nil || !strings.Contains(err.Error(), "no root of this meshd's bundle") || !strings.Contains(err.Error(), "issued before a root rotation") {
		t.Fatalf("an old certificate with a fresh bundle: %v", err)
	}
	// The fresh credential works; meshd counted the stale meshctl's
	// refusals of its certificate, and check says so (and nothing else).
	out, err = run2(t, m, "check")
	if strings.Count(out, "✖") != 2 || !strings.Contains(out, "✖ clients trust meshd's certificate") {
		t.Fatalf("check with the fresh credential: %v\n%s", err, out)
	}
}

func runWith(t *testing.T, server, creds string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &out})
	root.SetArgs(append([]string{"--server", server, "--credentials", creds}, args...))
	err := root.Execute()
	return out.String(), err
}

func run2(t *testing.T, m *controlplanetest.Meshd, args ...string) (string, error) {
	return runWith(t, m.Addr, m.OperatorCredentialDir(), args...)
}
