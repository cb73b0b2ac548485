package agent

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
)

// The expiry gauges are Unix times: the SVID's NotAfter and the earliest
// root's of the bundle, 0 before the first bootstrap.
func TestExpirationTimestampGauges(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	tok := m.Token(t, "default", "web", 1)
	reg := prometheus.NewRegistry()
	a, err := New(Config{ControlPlane: m.Addr, Token: tok.Secret, CAPin: tok.Token.GetCaPin(), Service: "web", StateDir: t.TempDir() + "/state", Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if got := gaugeValue(t, a.expiry); got != 0 {
		t.Errorf("svid expiration before bootstrap = %v, want 0", got)
	}
	if got := gaugeValue(t, a.rootsExp); got != 0 {
		t.Errorf("bundle expiration before bootstrap = %v, want 0", got)
	}
	if err := a.refresh(testCtx(t)); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	leaf := a.SVIDSource().Current().Certificates[0]
	if got, want := gaugeValue(t, a.expiry), float64(leaf.NotAfter.Unix()); got != want {
		t.Errorf("minimesh_proxy_svid_expiration_timestamp_seconds = %v, want the SVID's NotAfter %v", got, want)
	}
	roots := a.BundleSource().Bundle().X509Authorities()
	if len(roots) == 0 {
		t.Fatal("no roots")
	}
	if got, want := gaugeValue(t, a.rootsExp), float64(roots[0].NotAfter.Unix()); got != want {
		t.Errorf("minimesh_proxy_trust_bundle_expiration_timestamp_seconds = %v, want the root's NotAfter %v", got, want)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, f := range families {
		switch f.GetName() {
		case "minimesh_proxy_svid_expiration_timestamp_seconds", "minimesh_proxy_trust_bundle_expiration_timestamp_seconds":
			found++
		}
	}
	if found != 2 {
		t.Errorf("registered expiry gauges: %d, want 2", found)
	}
}

func gaugeValue(t *testing.T, g prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
