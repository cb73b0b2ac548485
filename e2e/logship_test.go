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
// access log to a real S3-compatible store (versitygw); the store is
// stopped for a while under traffic and started again, and then the
// bucket holds every request's line exactly once (counted by request
// ID), under keys api/<pod>/<instance>/<first>-<last>.jsonl.gz, and the
// access log's own output has every line too.
func TestLogShippingExactlyOnceAcrossOutage(t *testing.T) {
	store := s3test.Start(t, "mesh-logs")
	dir := t.TempDir()
	logFile := filepath.Join(dir, "access.log")
	pm := startPolicyMeshWith(t, "", func(c *sidecar.Config) {
		c.AccessLogFile = logFile
		c.SpoolDir = filepath.Join(dir, "spool")
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

	rc := &rawConn{pm: pm}
	const n = 45
	for i := 1; i <= n; i++ {
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
					Path      string `json:"path"`
				}
				if err := json.Unmarshal(l, &rec); err != nil {
					return fmt.Errorf("%s: %q: %v", o.Key, l, err)
				}
				seen[rec.RequestID]++
			}
		}
		for id, c := range seen {
			if c != 1 {
				return fmt.Errorf("%s stored %d times", id, c)
			}
		}
		for i := 1; i <= n; i++ {
			if seen[fmt.Sprintf("req-%d", i)] != 1 {
				return fmt.Errorf("req-%d not stored yet (%d of %d)", i, len(seen), n)
			}
		}
		if len(seen) != n {
			return fmt.Errorf("%d request IDs stored, want %d", len(seen), n)
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
	if !strings.Contains(body, "minimesh_logship_records_shipped_total "+fmt.Sprint(n)+"\n") {
		t.Errorf("/metrics does not count %d records shipped", n)
	}
	if strings.Contains(body, "minimesh_logship_batches_failed_total 0\n") {
		t.Error("no upload failed: the outage was not seen")
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if lines, err := jsonLines(b); err != nil || len(lines) != n {
		t.Errorf("the access log file holds %d lines (%v), want %d: the tee took them from it", len(lines), err, n)
	}
}
