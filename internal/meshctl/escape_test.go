package meshctl_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/dataplane/agent"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// refuse is a hostile proxy's Applier: it NACKs every snapshot with a
// reason that would erase the line above and reorder what follows.
type refuse struct{}

func (refuse) Apply(*meshv1.Snapshot) ([]*meshv1.FileStatus, error) {
	return nil, errors.New("\x1b[2K\x1b[1A\rall good\u202e\u009b31m")
}

// A proxy's strings (its version, its address, a NACK reason) reach the
// operator's terminal escaped in every table, and as valid, equal JSON.
func TestWorkloadStringsEscaped(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	tok := m.Token(t, "default", "evil", 1)
	const version = "\x1b[2K\x1b[1Av9\u202e\tSYNCED"
	ag, err := agent.New(agent.Config{
		ControlPlane: m.Addr, TrustDomain: spiffeid.RequireTrustDomainFromString("minimesh.local"),
		Token: tok.GetSecret(), CAPin: tok.GetCaPin(), Service: "evil", Advertise: "evil.example:80", // meshd refuses an address with control characters (push.TestHelloAdvertiseAddress)
		Version: version, StateDir: t.TempDir(), Applier: refuse{}, BackoffMax: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ag.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var out string
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(out, "NACKED") {
		time.Sleep(20 * time.Millisecond)
		out, _ = run(t, m, "proxy-status")
	}
	if !strings.Contains(out, "NACKED") {
		t.Fatalf("the proxy did not NACK: ready %v\n%s", ag.Ready(), out)
	}
	for _, args := range [][]string{{"proxy-status"}, {"proxies"}} {
		out, err := run(t, m, args...)
		if err != nil {
			t.Fatalf("%s: %v", args[0], err)
		}
		if strings.ContainsAny(out, "\x1b\x07\r\u202e\u009b") {
			t.Errorf("%s shows raw control characters:\n%q", args[0], out)
		}
		if args[0] == "proxies" && !strings.Contains(out, `\x1b[2K\x1b[1Av9\u202e\x09SYNCED`) {
			t.Errorf("proxies does not show the version escaped:\n%s", out)
		}
		if args[0] == "proxy-status" && !strings.Contains(out, `NACKED (\x1b[2K\x1b[1A\x0dall good\u202e\u009b31m)`) {
			t.Errorf("proxy-status does not show the NACK reason escaped:\n%s", out)
		}
		if n := strings.Count(out, "\n"); n != 2 {
			t.Errorf("%s: %d lines, want a header and one row (a tab or newline in a value makes no cell or row):\n%s", args[0], n, out)
		}
	}
	// JSON: the encoder escapes C0; the terminal writer escapes C1 and
	// bidi controls as \uXXXX, which JSON reads back as the same string.
	out, err = run(t, m, "proxies", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out, "\x1b\x07\u202e\u009b") {
		t.Errorf("proxies -o json shows raw control characters:\n%q", out)
	}
	var resp struct {
		Proxies []struct {
			Version string `json:"version"`
		} `json:"proxies"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Proxies) != 1 || resp.Proxies[0].Version != version {
		t.Errorf("proxies -o json: %v %+v, want the version %q back", err, resp, version)
	}
	out, err = run(t, m, "proxies", "-o", "yaml")
	if err != nil || strings.ContainsAny(out, "\x1b\x07\u202e\u009b") {
		t.Errorf("proxies -o yaml: %v, raw control characters:\n%q", err, out)
	}
	if got := meshctl.ErrorText(errors.New("no proxy \x1b[31mx")); got != `no proxy \x1b[31mx` {
		t.Errorf("ErrorText = %q", got)
	}
}
