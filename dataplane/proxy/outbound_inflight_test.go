package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The per-service cap of requests in flight holds across a push: a new
// table does not reset the count of requests still in flight.
func TestOutboundInFlightCapSurvivesInstall(t *testing.T) {
	m := newMesh(t)
	arrived, release := make(chan struct{}, 2), make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer app.Close()
	inLn := listenLocal(t)
	log, _ := newLogger()
	in, err := NewInbound(InboundConfig{Listener: inLn, App: app.Listener.Addr().String(), SVID: m.api, Bundle: m.bundle, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	run(t, in)
	outLn := listenLocal(t)
	metrics := newMetrics(t)
	out, err := NewOutbound(OutboundConfig{
		Upstreams: []Upstream{{Name: "api", Listener: outLn}},
		SVID:      m.web, Bundle: m.bundle, Logger: log, Metrics: metrics,
		MaxRequestsPerService: 2, Limits: Limits{Drain: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	install := func() {
		t.Helper()
		tab, err := CompileTable(TableConfig{}, snapshot(t, "", "default/api "+inLn.Addr().String()+" "+apiID))
		if err != nil {
			t.Fatal(err)
		}
		out.Install(tab)
	}
	install()
	run(t, out)
	client := plainClient(t)
	url := "http://" + outLn.Addr().String()
	status := func(path string) int {
		t.Helper()
		resp, err := client.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	held := make(chan int, 2)
	for range 2 {
		go func() { held <- status("/hold") }()
		<-arrived
	}
	defer func() {
		close(release)
		for range 2 {
			if code := <-held; code != http.StatusOK {
				t.Errorf("held request: %d", code)
			}
		}
	}()
	if code := status("/"); code != http.StatusServiceUnavailable {
		t.Fatalf("third request with two in flight: %d, want 503", code)
	}
	install() // a push: a new table, the same service
	if code := status("/"); code != http.StatusServiceUnavailable {
		t.Errorf("third request after a push, two still in flight: %d, want 503 (the cap was reset)", code)
	}
	var d dto.Metric
	_ = metrics.overflows.WithLabelValues(ListenerOutbound).Write(&d)
	if got := d.GetCounter().GetValue(); got != 2 {
		t.Errorf("overflows counted: %v, want 2", got)
	}
}
