package controlplane_test

import (
	"testing"

	dto "github.com/prometheus/client_model/go"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// gathered is every series of name in m's registry, by its labels
// ("k=v,k=v" in label order).
func gathered(t *testing.T, m *controlplanetest.Meshd, name string) map[string]*dto.Metric {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.Metric{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			k := ""
			for i, l := range mt.GetLabel() {
				if i > 0 {
					k += ","
				}
				k += l.GetName() + "=" + l.GetValue()
			}
			out[k] = mt
		}
	}
	return out
}

// meshd's CA metrics follow a root rotation: the roots' expiry by role,
// the intermediate's, the phase; an Apply counts by its outcome; build
// info is there.
func TestMeshdCAAndApplyMetrics(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	op := m.Operator(t)
	st, err := op.CAStatus(ctx(t), &meshv1.CAStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	roots := gathered(t, m, "minimesh_meshd_ca_root_expiration_timestamp_seconds")
	active := roots["pin="+st.Active.Pin+",role=active"]
	if len(roots) != 1 || active == nil || active.GetGauge().GetValue() != float64(st.Active.NotAfter.AsTime().Unix()) {
		t.Fatalf("root expiry series %v, want the active root's NotAfter %v", roots, st.Active.NotAfter.AsTime().Unix())
	}
	inter := gathered(t, m, "minimesh_meshd_ca_intermediate_expiration_timestamp_seconds")[""]
	if inter == nil || inter.GetGauge().GetValue() != float64(st.IntermediateNotAfter.AsTime().Unix()) {
		t.Errorf("intermediate expiry %v, want %v", inter, st.IntermediateNotAfter.AsTime().Unix())
	}
	phase := func(want string) {
		t.Helper()
		ph := gathered(t, m, "minimesh_meshd_ca_rotation_phase")
		for _, p := range []string{controlplane.PhaseIdle, controlplane.PhasePrepared, controlplane.PhaseActivated} {
			v := 0.0
			if p == want {
				v = 1
			}
			if got := ph["phase="+p].GetGauge().GetValue(); got != v {
				t.Errorf("phase %s = %v, want %v (in %s)", p, got, v, want)
			}
		}
	}
	phase(controlplane.PhaseIdle)
	rs, err := op.RotateCA(ctx(t), &meshv1.RotateCARequest{})
	if err != nil {
		t.Fatal(err)
	}
	phase(controlplane.PhasePrepared)
	roots = gathered(t, m, "minimesh_meshd_ca_root_expiration_timestamp_seconds")
	if next := roots["pin="+rs.Status.Next.Pin+",role=next"]; len(roots) != 2 || next == nil || next.GetGauge().GetValue() != float64(rs.Status.Next.NotAfter.AsTime().Unix()) {
		t.Errorf("root expiry series in phase prepared: %v", roots)
	}
	if _, err := op.RotateCA(ctx(t), &meshv1.RotateCARequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	phase(controlplane.PhaseActivated)
	roots = gathered(t, m, "minimesh_meshd_ca_root_expiration_timestamp_seconds")
	if roots["pin="+rs.Status.Next.Pin+",role=active"] == nil || roots["pin="+st.Active.Pin+",role=retired"] == nil {
		t.Errorf("root expiry series in phase activated: %v", roots)
	}

	applies := func(outcome string) float64 {
		return m.Counter(t, "minimesh_meshd_applies_total", "outcome", outcome)
	}
	svc := &meshv1.Resource{ApiVersion: "minimesh.io/v1alpha1", Kind: "Service", Name: "api", Namespace: "default",
		Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{
			Ports:             []*meshv1.ServicePort{{Name: "http", Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
			ServingIdentities: []string{"spiffe://minimesh.local/ns/default/sa/api"}}}}
	for range 2 { // created, then unchanged
		if _, err := op.Apply(ctx(t), &meshv1.ApplyRequest{Resources: []*meshv1.Resource{svc}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := op.Apply(ctx(t), &meshv1.ApplyRequest{Resources: []*meshv1.Resource{svc}, DryRun: true}); err != nil {
		t.Fatal(err)
	}
	bad := &meshv1.Resource{ApiVersion: "minimesh.io/v1alpha1", Kind: "Service", Name: "Not A Name", Namespace: "default",
		Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{}}}
	if _, err := op.Apply(ctx(t), &meshv1.ApplyRequest{Resources: []*meshv1.Resource{bad}}); err == nil {
		t.Fatal("a bad name applied")
	}
	for outcome, want := range map[string]float64{"applied": 1, "unchanged": 1, "dry_run": 1, "invalid": 1, "error": 0} {
		if got := applies(outcome); got != want {
			t.Errorf("applies{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	if len(gathered(t, m, "minimesh_meshd_build_info")) != 1 {
		t.Error("no minimesh_meshd_build_info")
	}
}
