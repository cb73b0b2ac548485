package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// meshctlTry runs meshctl in-process against m and returns its output and
// error (meshctlRun fails the test on an error).
func meshctlTry(m *controlplanetest.Meshd, args ...string) (string, error) {
	var out bytes.Buffer
	root := meshctl.NewRoot(meshctl.IO{Out: &out, Err: &out})
	root.SetIn(strings.NewReader(""))
	root.SetArgs(append([]string{"--server", m.Addr, "--credentials", m.OperatorCredentialDir()}, args...))
	err := root.Execute()
	return out.String(), err
}

// The scenario of issue 20: `ca rotate --force` in phase activated drops
// the old root while both proxies still hold SVIDs from it. Every view
// must say so: proxy-status (UNTRUSTED), each proxy's /ready (503), ca
// status and meshctl check (a failure). Before it, on the fresh mesh,
// meshctl check exits 0 (the positive control).
func TestForcedRotationIsReportedEverywhere(t *testing.T) {
	// SVIDs of an hour: no renewal during the test, so phase activated
	// waits for the proxies' old-root SVIDs, and a short RotationCheck
	// moves phase prepared on as soon as both ACK the new bundle.
	m := startMesh(t, controlplane.Config{SVIDTTL: time.Hour, RotationCheck: 50 * time.Millisecond}, 1)
	ids := []string{m.web.Agent.InstanceID(), m.api.Agent.InstanceID()}

	if out, err := meshctlTry(m.meshd, "check"); err != nil {
		t.Fatalf("meshctl check on a fresh mesh: %v\n%s", err, out)
	}

	meshctlRun(t, m.meshd, "ca", "rotate")
	eventually(t, 20*time.Second, "phase activated", func() error {
		st, err := m.meshd.Operator(t).CAStatus(context.Background(), &meshv1.CAStatusRequest{})
		if err != nil {
			return err
		}
		if st.Phase != controlplane.PhaseActivated {
			return fmt.Errorf("phase %s, waiting for %s", st.Phase, st.WaitingFor)
		}
		return nil
	})

	// The guard rail: without a terminal and without --yes, refused,
	// naming what it would break; nothing changes.
	out, err := meshctlTry(m.meshd, "ca", "rotate", "--force")
	if err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("ca rotate --force without --yes: %v\n%s", err, out)
	}
	for _, id := range ids {
		if !strings.Contains(out, id) {
			t.Errorf("ca rotate --force does not name %s among the proxies it breaks:\n%s", id, out)
		}
	}
	if st, _ := m.meshd.Operator(t).CAStatus(context.Background(), &meshv1.CAStatusRequest{}); st.GetPhase() != controlplane.PhaseActivated {
		t.Fatalf("a refused --force changed the phase to %s", st.GetPhase())
	}

	meshctlRun(t, m.meshd, "ca", "rotate", "--force", "--yes")

	// proxy-status: both UNTRUSTED, naming the root, table and JSON.
	eventually(t, 20*time.Second, "proxy-status UNTRUSTED", func() error {
		out, err := meshctlTry(m.meshd, "proxy-status")
		if err != nil {
			return err
		}
		if n := strings.Count(out, "UNTRUSTED (svid root sha256:"); n != 2 {
			return fmt.Errorf("%d UNTRUSTED, want 2:\n%s", n, out)
		}
		return nil
	})
	js, err := meshctlTry(m.meshd, "proxy-status", "-o", "json")
	if err != nil || strings.Count(js, "SYNC_STATE_UNTRUSTED\"") != 2 {
		t.Errorf("proxy-status -o json: %v\n%s", err, js)
	}

	// /ready: 503 with the reason, on both.
	for _, h := range []*proxyHandle{m.web, m.api} {
		eventually(t, 10*time.Second, "/ready 503", func() error {
			resp, err := http.Get("http://" + h.admin + "/ready")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "does not chain") {
				return fmt.Errorf("/ready %d: %s", resp.StatusCode, b)
			}
			return nil
		})
	}

	// ca status: idle, but both proxies named UNTRUSTED.
	out = meshctlRun(t, m.meshd, "ca", "status")
	if !strings.Contains(out, "UNTRUSTED:") || !strings.Contains(out, ids[0]) || !strings.Contains(out, ids[1]) || !strings.Contains(out, "(unknown to meshd)") {
		t.Errorf("ca status does not report the breakage:\n%s", out)
	}

	// meshctl check: exits non-zero, with the failing checks named.
	out, err = meshctlTry(m.meshd, "check")
	if err == nil {
		t.Fatalf("meshctl check exited 0 after the forced rotation:\n%s", out)
	}
	for _, want := range []string{"✖ every proxy's SVID chains to a root it trusts", "✖ proxies' SVIDs chain to their bundle"} {
		if !strings.Contains(out, want) {
			t.Errorf("meshctl check does not say %q:\n%s", want, out)
		}
	}
	js, _ = meshctlTry(m.meshd, "check", "-o", "json")
	var res struct {
		Success bool `json:"success"`
		Checks  []meshctl.CheckResult
	}
	if err := json.Unmarshal([]byte(js), &res); err != nil || res.Success {
		t.Errorf("check -o json: success %v, %v\n%s", res.Success, err, js)
	}
	t.Logf("check after the forced rotation:\n%s", out)
	if out, err := meshctlTry(m.meshd, "check", "--proxy", ids[0]); err == nil || !strings.Contains(out, ids[0]) {
		t.Errorf("check --proxy %s: %v\n%s", ids[0], err, out)
	}
}
