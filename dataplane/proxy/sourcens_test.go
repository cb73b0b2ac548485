package proxy

import (
	"net/http"
	"testing"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

// TestSourcesKeyedByNamespace: two callers with one service-account name in
// two namespaces are two sources at the inbound, in its metrics
// (source_service and source_namespace) and in its stats report, never one
// merged "web".
func TestSourcesKeyedByNamespace(t *testing.T) {
	checkLeaks(t)
	m, a := newMesh(t), newApp(t)
	reg, metrics := registeredMetrics(t)
	inLn := listenLocal(t)
	rep := NewStatsReporter(startInbound(t, m, a, metrics, inLn), nil)
	prodWeb := certs.NewSVIDSource(nil)
	prodWeb.Set(certstest.SVID(t, m.ca, "spiffe://minimesh.local/ns/prod/sa/web"))
	url := "https://" + inLn.Addr().String() + "/hello"
	for src, n := range map[*certs.SVIDSource]int{m.web: 2, prodWeb: 3} {
		c := mtlsClient(t, src, m.bundle, apiID, false)
		for range n {
			if resp, _ := get(t, c, url, nil); resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "minimesh_proxy_inbound_requests_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range s.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["class"] == "2xx" {
				got[l["source_namespace"]+"/"+l["source_service"]] += s.GetCounter().GetValue()
			}
		}
	}
	if len(got) != 2 || got["default/web"] != 2 || got["prod/web"] != 3 {
		t.Errorf("inbound 2xx by source_namespace/source_service = %v, want default/web 2 and prod/web 3", got)
	}
	edges := map[string]uint64{}
	for _, e := range rep.Report().GetEdges() {
		edges[e.GetSourceNamespace()+"/"+e.GetSourceService()] += e.GetClasses()[1]
	}
	if len(edges) != 2 || edges["default/web"] != 2 || edges["prod/web"] != 3 {
		t.Errorf("reported 2xx by source = %v, want default/web 2 and prod/web 3", edges)
	}
}
