package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minimesh/dataplane/logship/s3test"
	"minimesh/dataplane/sidecar"
)

// TestLogShippingExactlyOnceAcrossOutage: a LogShipping sends api's
// access log and its app's log (through a LogAdapter) to a real
// S3-compatible store (versitygw); the store is stopped for a while under
// traffic and started again, and then the bucket holds every request's
// line and every app line exactly once (counted by request ID and by the
// app's line number), under keys api/<pod>/<instance>/<first>-<last>.jsonl.gz,
// and the access log's own output has every line too.
func TestLogShippingExactlyOnceAcrossOutage(t *testing.T) {
	store := s3test.Start(t, "mesh-logs")
	dir := t.TempDir()
	logFile := filepath.Join(dir, "access.log")
	shared := filepath.Join(dir, "shared")
	if err := os.MkdirAll(filepath.Join(shared, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	pm := startPolicyMeshWith(t, "", func(c *sidecar.Config) {
		c.AccessLogFile = logFile
		c.SpoolDir = filepath.Join(dir, "spool")
		c.SharedDir = shared
		c.Pod = "api-0"
	})
	rev := applyDocs(t, pm.meshd, fmt.Sprintf(`
apiVersion: minimesh.io/v1alpha1
kind: AccessLog
metadata: {name: api-log}
spec:
  service: api
  enabled: true
  fields: [time, method, path, status, request_id]
---
apiVersion: minimesh.io/v1alpha1
kind: LogAdapter
metadata: {name: api-app}
spec:
  service: api
  files: ["logs/*.log"]
  format: text
---
apiVersion: minimesh.io/v1alpha1
kind: LogShipping
metadata: {name: api-logs}
spec:
  service: api
  endpoint: %s
  bucket: mesh-logs
  pathStyle: true
  credentialsFile: %s
  batchAge: 1s
`, store.Endpoint(), store.CredentialsFile(dir)))
	pm.api.waitSnapshot(t, "the log shipping", hasResource("LogShipping", "api-logs", rev))

	pm.api.waitSnapshot(t, "the log adapter", hasResource("LogAdapter", "api-app", rev))
	appLog, err := os.OpenFile(filepath.Join(shared, "logs", "app.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer appLog.Close()

	rc := &rawConn{pm: pm}
	const n = 45
	for i := 1; i <= n; i++ {
		if _, err := fmt.Fprintf(appLog, "app line %d\n", i); err != nil {
			t.Fatal(err)
		}
		switch i {
		case 16:
			store.Stop()
		case 31:
			store.StartAgain()
		}
		req := fmt.Sprintf("GET /orders/%d HTTP/1.1\r\nHost: api\r\nX-Request-Id: req-%d\r\n\r\n", i, i)
		if resp, _, err := rc.do(t, req); err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v %v", i, resp, err)
		}
		time.Sleep(100 * time.Millisecond) // 4.5 s of traffic, the store away 1.5 s of it
	}
	var keys []string
	eventually(t, 20*time.Second, "every request's line in the store once", func() error {
		objs, err := store.Objects(context.Background(), "mesh-logs", "")
		if err != nil {
			return err
		}
		keys = keys[:0]
		seen := map[string]int{}
		for _, o := range objs {
			keys = append(keys, o.Key)
			for _, l := range o.Lines {
				var rec struct {
					RequestID string `json:"request_id"`
					Source    string `json:"source"`
					Message   string `json:"message"`
				}
				if err := json.Unmarshal(l, &rec); err != nil {
					return fmt.Errorf("%s: %q: %v", o.Key, l, err)
				}
				if rec.Source == "app" {
					seen[rec.Message]++
				} else {
					seen[rec.RequestID]++
				}
			}
		}
		for id, c := range seen {
			if c != 1 {
				return fmt.Errorf("%s stored %d times", id, c)
			}
		}
		for i := 1; i <= n; i++ {
			for _, id := range []string{fmt.Sprintf("req-%d", i), fmt.Sprintf("app line %d", i)} {
				if seen[id] != 1 {
					return fmt.Errorf("%q not stored yet (%d of %d)", id, len(seen), 2*n)
				}
			}
		}
		if len(seen) != 2*n {
			return fmt.Errorf("%d IDs stored, want %d", len(seen), 2*n)
		}
		return nil
	})
	inst := pm.api.Agent.InstanceID()
	for _, k := range keys {
		if !strings.HasPrefix(k, "api/api-0/"+inst+"/") || !strings.HasSuffix(k, ".jsonl.gz") {
			t.Errorf("object key %q, want api/api-0/%s/<first>-<last>.jsonl.gz", k, inst)
		}
	}
	body, err := httpGet("http://" + pm.api.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "minimesh_logship_records_shipped_total "+fmt.Sprint(2*n)+"\n") {
		t.Errorf("/metrics does not count %d records shipped", 2*n)
	}
	if strings.Contains(body, "minimesh_logship_batches_failed_total 0\n") {
		t.Error("no upload failed: the outage was not seen")
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	// The output (the access-log file, which the adapter's records share)
	// has every line too: the shipper only tees.
	if lines, err := jsonLines(b); err != nil || len(lines) != 2*n {
		t.Errorf("the access log file holds %d lines (%v), want %d", len(lines), err, 2*n)
	}
}
