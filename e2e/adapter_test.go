package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/sidecar"
)

// syncBuffer is the proxy's output, read by the test while it writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// appRecords are the adapter's records in the output so far.
func (s *syncBuffer) appRecords(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(s.b.String(), "\n") {
		if !strings.Contains(line, `"source":"app"`) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("output line is not JSON: %v: %q", err, line)
		}
		out = append(out, m)
	}
	return out
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAdapterStackTracesAcrossRotationAndRestart: the app writes its log
// in the pod's shared dir; the proxy's LogAdapter (from meshd) makes each
// line a JSON record and each Python stack trace one record, parsed by
// its regex. The log is rotated (renamed; the app finishes a stack trace
// in the old file), the proxy is restarted (SIGTERM's path) with a stack
// trace half written and the rest written while it is down, and every
// record arrives exactly once, whole. A symbolic link to the proxy's own
// private key and a FIFO, both matching the glob, are never read. The
// app's metrics (the Service's spec.metrics) are on the proxy's /metrics.
func TestAdapterStackTracesAcrossRotationAndRestart(t *testing.T) {
	metricsL := listen(t)
	metricsSrv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "# HELP orders_total Orders taken.\n# TYPE orders_total counter\norders_total{shop=\"berlin\"} 42\n")
	})}
	go func() { _ = metricsSrv.Serve(metricsL) }()
	t.Cleanup(func() { _ = metricsSrv.Close() })

	m := controlplanetest.Start(t, controlplane.Config{})
	applyDocs(t, m, fmt.Sprintf(`
apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/api"]
  metrics: {port: %d, path: /metrics}
---
apiVersion: minimesh.io/v1alpha1
kind: LogAdapter
metadata: {name: api-logs}
spec:
  service: api
  files: ["logs/*.log"]
  recordStart: '\d{4}-\d\d-\d\dT'
  format: regex
  pattern: '^(?P<time>\S+) (?P<level>[A-Z]+) (?P<msg>.*)$'
  flushAfter: 10s
`, metricsL.Addr().(*net.TCPAddr).Port))
	tok := m.Token(t, "default", "api", 1)
	app := startApp(t, "api")
	state, shared := t.TempDir(), t.TempDir()
	logs := filepath.Join(shared, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	run := func() (string, func()) {
		adminL := listen(t)
		_, cancel, done := runSidecar(t, "api", sidecar.Config{
			ControlPlane: m.Addr, Token: tok.GetSecret(), CAPin: tok.GetCaPin(), Service: "api", Pod: "api-0",
			App: app.addr, StateDir: state, SharedDir: shared, InboundListener: listen(t), AdminListener: adminL,
			AccessLog: out, Registry: prometheus.NewRegistry(), Logger: logger(), AgentBackoffMax: time.Second,
		})
		admin := adminL.Addr().String()
		waitAdminReady(t, "api", admin)
		return admin, func() { cancel(); done <- <-done }
	}
	admin, stop := run()
	_ = admin // the restarted proxy's is the one asked

	// Plant the proxy's own private key behind a link, and a FIFO.
	keys, _ := filepath.Glob(filepath.Join(state, "*.pem"))
	var key string
	for _, k := range keys {
		if b, err := os.ReadFile(k); err == nil && bytes.Contains(b, []byte("PRIVATE KEY")) {
			key = k
		}
	}
	if key == "" {
		t.Fatalf("no private key among %v", keys)
	}
	if err := os.Symlink(key, filepath.Join(logs, "key.log")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(logs, "pipe.log"), 0o644); err != nil {
		t.Fatal(err)
	}

	appLog := filepath.Join(logs, "app.log")
	f, err := os.OpenFile(appLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	write := func(f *os.File, s string) {
		t.Helper()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	write(f, "2030-01-02T03:04:05Z INFO started\n"+
		"2030-01-02T03:04:06Z ERROR request failed\nTraceback (most recent call last):\n  File \"api.py\", line 10, in handle\n")
	waitRecords(t, out, 1)

	// Rotation by rename: the app finishes its stack trace in the file it
	// has open, then reopens app.log.
	if err := os.Rename(appLog, appLog+".1"); err != nil {
		t.Fatal(err)
	}
	write(f, "    return db.get(key)\nKeyError: 'order-7'\n")
	f.Close()
	if f, err = os.OpenFile(appLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	write(f, "2030-01-02T03:04:07Z INFO after rotation\n2030-01-02T03:04:08Z ERROR again\nTraceback (most recent call last):\n")
	waitRecords(t, out, 3) // the first stack trace (the old file's end, complete once the app writes the new file), "after rotation"

	// A restart in the middle of the second stack trace, the rest of it
	// written while the proxy is down.
	stop()
	write(f, "  File \"api.py\", line 12, in handle\nValueError: order-8\n")
	admin, _ = run()
	write(f, "2030-01-02T03:04:09Z INFO done\n2030-01-02T03:04:10Z INFO bye\n")
	waitRecords(t, out, 5) // "bye" waits for what follows it

	type rec struct{ level, msg, continuation string }
	want := []rec{
		{"INFO", "started", ""},
		{"ERROR", "request failed", "Traceback (most recent call last):\n  File \"api.py\", line 10, in handle\n    return db.get(key)\nKeyError: 'order-7'"},
		{"INFO", "after rotation", ""},
		{"ERROR", "again", "Traceback (most recent call last):\n  File \"api.py\", line 12, in handle\nValueError: order-8"},
		{"INFO", "done", ""},
	}
	got := out.appRecords(t)
	ids := map[any]bool{}
	for _, r := range got {
		if ids[r["record_id"]] {
			t.Errorf("record %v twice", r["record_id"])
		}
		ids[r["record_id"]] = true
		if r["service"] != "api" || r["pod"] != "api-0" || r["identity"] != "spiffe://minimesh.local/ns/default/sa/api" {
			t.Errorf("record fields: %v", r)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d:\n%s", len(got), len(want), out)
	}
	for i, w := range want {
		c, _ := got[i]["continuation"].(string)
		if got[i]["level"] != w.level || got[i]["msg"] != w.msg || c != w.continuation {
			t.Errorf("record %d = %v, want %+v", i, got[i], w)
		}
	}
	if s := out.String(); strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, "key.log") || strings.Contains(s, "pipe.log") {
		t.Errorf("the link or the FIFO was read:\n%s", s)
	}

	body, err := httpGet("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`orders_total{shop="berlin",source="app"} 42`, "minimesh_proxy_app_metrics_up 1"} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	if !strings.Contains(body, `minimesh_proxy_logadapter_skipped_total{reason="not_regular"}`) ||
		strings.Contains(body, `minimesh_proxy_logadapter_skipped_total{reason="not_regular"} 0`+"\n") {
		t.Errorf("the link and the FIFO are not counted as skipped")
	}
}

// waitRecords waits until the output holds n of the app's records.
func waitRecords(t *testing.T, out *syncBuffer, n int) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("%d app records", n), func() error {
		if got := len(out.appRecords(t)); got < n {
			return fmt.Errorf("%d records:\n%s", got, out)
		}
		return nil
	})
}
