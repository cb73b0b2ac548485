package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/filesync"
	meshv1 "minimesh/proto/mesh/v1"
)

// lockedBuffer is an io.Writer the test reads while the proxy writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The adapter role in a real Sidecar fed by a real meshd: the LogAdapter
// applied from the snapshot turns the app's multi-line log into one JSON
// record on the output, with the proxy's identity; the Service's
// spec.metrics merges the app's metrics into the admin /metrics.
func TestAdapterRole(t *testing.T) {
	metricsApp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "# TYPE orders_total counter\norders_total{shop=\"a\"} 42\n")
	})}
	go func() { _ = srv.Serve(metricsApp) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := metricsApp.Addr().(*net.TCPAddr).Port

	m := controlplanetest.Start(t, controlplane.Config{})
	tok := m.Token(t, "default", "api", 1)
	applyDocs(t, m, fmt.Sprintf(`
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api"]
  metrics: {port: %d, path: /stats}
---
apiVersion: minimesh.io/v1alpha1
kind: LogAdapter
metadata: {name: api-logs}
spec:
  service: api
  files: ["logs/*.log"]
  recordStart: '\d{4}-'
  flushAfter: 100ms
`, port))
	app := startPathApp(t)
	shared := t.TempDir()
	if err := os.Mkdir(filepath.Join(shared, api.LogsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	admL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sc, err := New(Config{
		ControlPlane: m.Addr, Token: tok.GetSecret(), CAPin: tok.GetCaPin(), Service: "api", Pod: "api-0",
		App: app.addr, StateDir: t.TempDir(), SharedDir: shared, InboundListener: inL, AdminListener: admL,
		AccessLog: out, Registry: prometheus.NewRegistry(), AgentBackoffMax: 200 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	f, err := os.OpenFile(filepath.Join(shared, "logs/app.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.WriteString(f, "2030-01-02 ERROR failed\nTraceback (most recent call last):\n  File \"app.py\", line 3\nValueError: x\n"); err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	waitFor(t, "the app's record on the output", func() error {
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, `"source":"app"`) {
				return json.Unmarshal([]byte(line), &rec)
			}
		}
		return fmt.Errorf("output: %q", out.String())
	})
	if rec["message"] != "2030-01-02 ERROR failed\nTraceback (most recent call last):\n  File \"app.py\", line 3\nValueError: x" ||
		rec["identity"] != "spiffe://minimesh.local/ns/default/sa/api" || rec["pod"] != "api-0" || rec["file"] != "logs/app.log" {
		t.Errorf("record = %v", rec)
	}
	waitFor(t, "the app's metrics on /metrics", func() error {
		_, body, err := adminGet(admL.Addr().String(), "/metrics")
		if err != nil {
			return err
		}
		if !strings.Contains(body, `orders_total{shop="a",source="app"} 42`) || !strings.Contains(body, "minimesh_proxy_app_metrics_up 1") {
			return fmt.Errorf("no app series in /metrics")
		}
		return nil
	})
}

// A LogAdapter for this proxy's service NACKs without --shared-dir, with
// the reason; the Service's metrics win over --app-metrics.
func TestAdapterPart(t *testing.T) {
	s := &Sidecar{cfg: Config{Service: "api", Namespace: "prod", AppMetrics: "9100/m", Logger: slog.New(slog.DiscardHandler),
		Registry: prometheus.NewRegistry()}, ap: &applier{}}
	merger, err := s.addAdapter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if tg := merger.Target(); tg == nil || tg.Port != 9100 || tg.Path != "/m" {
		t.Fatalf("--app-metrics target = %+v", tg)
	}
	part := s.ap.parts[0]
	la := api.ToProto(&api.LogAdapter{Metadata: api.Metadata{Name: "logs", Namespace: "prod"}, Spec: &meshv1.LogAdapterSpec{Service: "api", Files: []string{"logs/a.log"}}})
	if _, err := part.Prepare(&meshv1.Snapshot{Version: "1", Resources: []*meshv1.Resource{la}}); err == nil ||
		!strings.Contains(err.Error(), "LogAdapter prod/logs") || !strings.Contains(err.Error(), "--shared-dir") {
		t.Fatalf("Prepare: %v, want a NACK naming the LogAdapter and --shared-dir", err)
	}
	svc := api.ToProto(&api.Service{Metadata: api.Metadata{Name: "api", Namespace: "prod"}, Spec: &meshv1.ServiceSpec{
		Ports: []*meshv1.ServicePort{{Name: "http", Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}}, Metrics: &meshv1.ServiceMetrics{Port: 9200}}})
	commit, err := part.Prepare(&meshv1.Snapshot{Version: "2", Resources: []*meshv1.Resource{svc}})
	if err != nil {
		t.Fatal(err)
	}
	commit()
	if tg := merger.Target(); tg == nil || tg.Port != 9200 {
		t.Errorf("target after the Service's metrics = %+v, want port 9200", tg)
	}
	commit, _ = part.Prepare(&meshv1.Snapshot{Version: "3"})
	commit()
	if tg := merger.Target(); tg == nil || tg.Port != 9100 {
		t.Errorf("target without them = %+v, want --app-metrics' 9100", tg)
	}
	if _, err := New(Config{ControlPlane: "127.0.0.1:1", Service: "api", App: "127.0.0.1:2", Inbound: "127.0.0.1:0", StateDir: t.TempDir(), AppMetrics: "80//x"}); err == nil ||
		!strings.Contains(err.Error(), "--app-metrics") {
		t.Errorf("a bad --app-metrics: %v", err)
	}
}

// The shared dir's logs/ is the app's: filesync never writes there (a
// ConfigFile under it is refused at apply too, by api).
func TestConfigFilesKeepOutOfLogs(t *testing.T) {
	fsync, err := sharedFiles(Config{SharedDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsync.Sync([]filesync.File{{Path: "logs/app.log", Mode: 0o644, Content: []byte("forged\n")}}); err == nil || !strings.Contains(err.Error(), `"logs"`) {
		t.Fatalf("Sync into logs/: %v, want refused naming logs", err)
	}
}

// An inbound on every address needs --advertise: other proxies cannot dial
// a wildcard, and meshd would refuse the registration.
func TestWildcardInboundNeedsAdvertise(t *testing.T) {
	for _, in := range []string{"0.0.0.0:15006", "[::]:15006", ":15006"} {
		_, err := New(Config{ControlPlane: "127.0.0.1:1", Service: "api", App: "127.0.0.1:2", Inbound: in, StateDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), "--advertise") {
			t.Errorf("--inbound %s without --advertise: %v", in, err)
		}
	}
	if _, err := New(Config{ControlPlane: "127.0.0.1:1", Service: "api", App: "127.0.0.1:2", Inbound: "127.0.0.1:15006", Advertise: "0.0.0.0:15006",
		StateDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "--advertise 0.0.0.0:15006: a wildcard") {
		t.Errorf("a wildcard --advertise: %v", err)
	}
	if _, err := New(Config{ControlPlane: "127.0.0.1:1", Service: "api", App: "127.0.0.1:2", Inbound: "0.0.0.0:15006", Advertise: "10.0.0.5:15006",
		StateDir: t.TempDir()}); err != nil && strings.Contains(err.Error(), "--advertise") {
		t.Errorf("with --advertise: %v", err)
	}
}
