package proxy

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// threeCallsWebToAPI starts api's inbound in front of an app and web's
// outbound, both recording into one registry, and sends three GETs
// through them.
func threeCallsWebToAPI(t *testing.T) (*prometheus.Registry, *Metrics) {
	t.Helper()
	checkLeaks(t)
	m, a := newMesh(t), newApp(t)
	reg, metrics := registeredMetrics(t)
	inLn := listenLocal(t)
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: inLn, App: a.addr(), SVID: m.api, Bundle: m.bundle, Service: "api", Namespace: "default",
		Metrics: metrics, Logger: log, Limits: Limits{Drain: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	outLn, _ := startOutbound(t, m, inLn.Addr().String(), apiID, metrics)
	c := plainClient(t)
	for range 3 {
		resp, _ := get(t, c, "http://"+outLn.Addr().String()+"/hello", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	return reg, metrics
}

// One edge, web → api, seen at web's outbound and at api's inbound: both
// series name the destination with the same labels and values (the
// service's name and its namespace apart), so a query joins them.
func TestEdgeSeriesShareDestinationLabels(t *testing.T) {
	reg, _ := threeCallsWebToAPI(t)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	type dest struct{ service, namespace string }
	seen := map[string]map[dest]float64{}
	for _, f := range families {
		switch f.GetName() {
		case "minimesh_proxy_inbound_requests_total", "minimesh_proxy_outbound_requests_total":
		default:
			continue
		}
		for _, s := range f.GetMetric() {
			var d dest
			class := ""
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "destination_service":
					d.service = l.GetValue()
				case "destination_namespace":
					d.namespace = l.GetValue()
				case "class":
					class = l.GetValue()
				}
			}
			if class != "2xx" {
				continue
			}
			if seen[f.GetName()] == nil {
				seen[f.GetName()] = map[dest]float64{}
			}
			seen[f.GetName()][d] += s.GetCounter().GetValue()
		}
	}
	want := dest{"api", "default"}
	for _, name := range []string{"minimesh_proxy_inbound_requests_total", "minimesh_proxy_outbound_requests_total"} {
		if got := seen[name][want]; got != 3 || len(seen[name]) != 1 {
			t.Errorf("%s 2xx by destination = %v, want exactly {destination_service=api, destination_namespace=default}: 3", name, seen[name])
		}
	}
}

// A service of the mesh and an ExternalService may share a name and a
// namespace (they are two kinds). Calls to each are counted in the
// outbound's series apart, by destination_kind, never summed into one.
func TestExternalAndMeshServiceOfOneNameCountedApart(t *testing.T) {
	reg, metrics := threeCallsWebToAPI(t)
	// What dataplane/external calls for each answered call to the
	// ExternalService "api" in "default".
	observe := metrics.ExternalObserver()
	observe("api", "default", http.StatusOK, 0.002)
	observe("api", "default", http.StatusBadGateway, 0.001)

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	type series struct{ service, namespace, kind, class string }
	got := map[series]float64{}
	durations := map[series]uint64{}
	for _, f := range families {
		name := f.GetName()
		if name != "minimesh_proxy_outbound_requests_total" && name != "minimesh_proxy_outbound_request_duration_seconds" {
			continue
		}
		for _, s := range f.GetMetric() {
			var k series
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "destination_service":
					k.service = l.GetValue()
				case "destination_namespace":
					k.namespace = l.GetValue()
				case "destination_kind":
					k.kind = l.GetValue()
				case "class":
					k.class = l.GetValue()
				}
			}
			if h := s.GetHistogram(); h != nil {
				durations[k] += h.GetSampleCount()
			} else if v := s.GetCounter().GetValue(); v != 0 {
				got[k] += v
			}
		}
	}
	want := map[series]float64{
		{"api", "default", "service", "2xx"}:  3,
		{"api", "default", "external", "2xx"}: 1,
		{"api", "default", "external", "5xx"}: 1,
	}
	if len(got) != len(want) {
		t.Errorf("outbound_requests_total = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("outbound_requests_total%+v = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	wantDur := map[series]uint64{{"api", "default", "service", ""}: 3, {"api", "default", "external", ""}: 2}
	for k, v := range wantDur {
		if durations[k] != v {
			t.Errorf("outbound_request_duration_seconds%+v count = %v, want %v (all: %v)", k, durations[k], v, durations)
		}
	}
}
