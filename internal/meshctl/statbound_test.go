package meshctl_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
)

// TestStatsAnswerOverItsBound: a proxy reports more callers, with larger
// identities, than one gRPC message can carry. meshd still answers (it
// failed with ResourceExhausted before its answers were bounded); stat
// counts every request, and edges names the busiest callers and says how
// many edges it folded into "other".
func TestStatsAnswerOverItsBound(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := controlplanetest.SendOversizeStats(t, m.Register(t, ctx, "default", "api"))

	var doc struct {
		Services []struct {
			Requests uint64 `json:"requests"`
		} `json:"services"`
		EdgesFolded uint32 `json:"edgesFolded"`
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := run(t, m, "stat", "-o", "json")
		if err == nil {
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if len(doc.Services) == 1 && doc.Services[0].Requests == want {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stat: %+v %v; want one service with %d requests", doc, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if doc.EdgesFolded == 0 {
		t.Fatalf("stat -o json: edgesFolded 0; the answer cannot name all 512 callers")
	}
	out, err := run(t, m, "edges")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "caller-511.default") || !strings.Contains(out, fmt.Sprintf("other (%d edges)", doc.EdgesFolded)) ||
		!strings.Contains(out, fmt.Sprintf("%d edges folded into \"other\"", doc.EdgesFolded)) {
		t.Errorf("edges: want the busiest caller, the folded edge and the note; got\n%.2000s", out)
	}
}
