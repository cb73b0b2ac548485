package e2e

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"minimesh/controlplane"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestRootRotationUnderLoad sends requests web -> api continuously while
// SVIDs rotate and the root goes through all three phases: zero failures.
func TestRootRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a full root rotation")
	}
	m := startMesh(t, controlplane.Config{SVIDTTL: 4 * time.Second, RotationCheck: 100 * time.Millisecond}, 1)
	plain := &http.Client{Timeout: 10 * time.Second}
	admin := m.meshd.Operator(t)
	oldPin := m.meshd.RootPin()

	// Every few requests also make a fresh handshake web -> api with the
	// web proxy's own SVID and bundle, so the rotation is exercised on new
	// connections too, not only on the long-lived one between the proxies.
	fresh := mtlsClient(m.web.Agent.SVIDSource(), m.web.Agent.BundleSource(), idOf("api"))
	fresh.Transport.(*http.Transport).DisableKeepAlives = true
	stop := make(chan struct{})
	done := make(chan [2]int, 1)
	var stopOnce sync.Once
	var res [2]int
	halt := func() [2]int {
		stopOnce.Do(func() { close(stop); res = <-done })
		return res
	}
	t.Cleanup(func() { halt() })
	go func() {
		var n, failed int
		for {
			select {
			case <-stop:
				done <- [2]int{n, failed}
				return
			default:
			}
			if _, err := get(plain, m.viaWebToAPI+"/during-rotation", nil); err != nil {
				failed++
				t.Errorf("request %d failed: %v", n, err)
			}
			if n%10 == 0 {
				if _, err := get(fresh, "https://"+m.api.inbound+"/fresh-handshake", nil); err != nil {
					failed++
					t.Errorf("fresh handshake %d failed: %v", n, err)
				}
			}
			n++
			time.Sleep(5 * time.Millisecond)
		}
	}()

	started, err := admin.RotateCA(context.Background(), &meshv1.RotateCARequest{})
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	// The phases as seen: the first from rotate's answer, then by polling
	// (a fast phase may pass between two polls).
	phases := []string{started.Status.Phase}
	eventually(t, 60*time.Second, "rotation back to idle on a new root", func() error {
		st, err := m.meshd.Operator(t).CAStatus(context.Background(), &meshv1.CAStatusRequest{})
		if err != nil {
			return err
		}
		if len(phases) == 0 || phases[len(phases)-1] != st.Phase {
			phases = append(phases, st.Phase)
		}
		if st.Phase != controlplane.PhaseIdle || st.Active.Pin == oldPin {
			return errString2("phase " + st.Phase + ", waiting for " + st.WaitingFor)
		}
		return nil
	})
	// Traffic keeps flowing on the new root alone.
	time.Sleep(300 * time.Millisecond)
	res = halt()
	if res[1] != 0 {
		t.Fatalf("%d of %d requests failed during the rotation", res[1], res[0])
	}
	if res[0] < 50 {
		t.Fatalf("only %d requests were sent", res[0])
	}
	want := []string{controlplane.PhasePrepared, controlplane.PhaseIdle}
	if !containsInOrder(phases, want) {
		t.Errorf("phases seen %v, want %v in order", phases, want)
	}
	// Both proxies now hold SVIDs of the new root, and so does the operator.
	for _, h := range []*proxyHandle{m.web, m.api} {
		svid := h.Agent.SVIDSource().Current()
		if _, _, err := verifyWith(svid.Certificates, m.meshd.CA()); err != nil {
			t.Errorf("a proxy's SVID does not verify against the new root: %v", err)
		}
	}
	if _, err := m.meshd.Operator(t).ListProxies(context.Background(), &meshv1.ListProxiesRequest{}); err != nil {
		t.Errorf("operator credential after rotation: %v", err)
	}
	t.Logf("%d requests, 0 failures, phases %v", res[0], phases)
}

type errString2 string

func (e errString2) Error() string { return string(e) }

func containsInOrder(got, want []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}
