package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"minimesh/internal/daemon"
	"minimesh/internal/testlog"
)

// freeAddr is a loopback address nothing listens on (a moment ago).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// jsonLines parses every line of a daemon's stderr as one JSON object with
// no key twice, and returns them.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		dups, err := daemon.DuplicateKeys(sc.Bytes())
		if err != nil {
			t.Fatalf("a log line that is not JSON: %q: %v", sc.Text(), err)
		}
		if len(dups) > 0 {
			t.Errorf("keys %v twice in %s", dups, sc.Text())
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, m)
	}
	return lines
}

func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), nil
}

// TestServe runs meshd as its command line does: /livez and /readyz on the
// metrics listener answer 200 once it serves, every log line is JSON with
// no key twice, and a line says when shutdown starts and when it ended.
func TestServe(t *testing.T) {
	metrics := freeAddr(t)
	var stderr testlog.Buffer
	root := newRoot(&bytes.Buffer{}, &stderr)
	root.SetArgs([]string{"--data-dir", filepath.Join(t.TempDir(), "meshd"), "--listen", freeAddr(t), "--metrics", metrics, "--log-level", "debug"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body, err := httpGet("http://" + metrics + "/readyz")
		if err == nil && code == http.StatusOK && body == "ready\n" {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("/readyz: %d %q %v\n%s", code, body, err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body, err := httpGet("http://" + metrics + "/livez"); err != nil || code != http.StatusOK || body != "ok\n" {
		t.Errorf("/livez: %d %q %v, want 200 ok", code, body, err)
	}
	if code, body, err := httpGet("http://" + metrics + "/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d %v", code, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("meshd: %v\n%s", err, stderr.String())
	}
	var msgs []string
	var stopped map[string]any
	for _, l := range jsonLines(t, stderr.String()) {
		msgs = append(msgs, l["msg"].(string))
		if l["msg"] == "meshd stopped" {
			stopped = l
		}
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"meshd starting", "meshd serving", "meshd shutting down", "meshd stopped"} {
		if !strings.Contains(all, want) {
			t.Errorf("no %q line in:\n%s", want, stderr.String())
		}
	}
	if took, ok := stopped["took"].(string); !ok || !regexp.MustCompile(`^[0-9.]+[µnm]?s$`).MatchString(took) {
		t.Errorf("meshd stopped: took %v, want a duration string such as 1.5s", stopped["took"])
	}
}

// TestStartupFailuresAreLogLines: a start-up failure is one log line in the
// log's format (JSON unless --log-format text), naming the flag; nothing
// else is printed.
func TestStartupFailuresAreLogLines(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "meshd")
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--data-dir is required"},
		{[]string{"--data-dir", dir, "--bogus"}, "unknown flag: --bogus"},
		{[]string{"-data-dir", dir}, "-data-dir"},
		{[]string{"--data-dir", dir, "--log-format", "yaml"}, `"--log-format"`},
		{[]string{"--data-dir", dir, "--bootstrap-rate", "0"}, "--bootstrap-rate: must be a positive"},
		{[]string{"--data-dir", dir, "--store", "etcd://127.0.0.1:1"}, "--ca-key-file is required"},
		// After meshd opened its data dir: the failure is the last line.
		{[]string{"--data-dir", dir, "--listen", "127.0.0.1:notaport"}, "listen"},
	} {
		var stdout, stderr bytes.Buffer
		root := newRoot(&stdout, &stderr)
		root.SetArgs(c.args)
		err := root.Execute()
		lines := jsonLines(t, stderr.String())
		if len(lines) > 1 && c.want == "listen" {
			lines = lines[len(lines)-1:]
		}
		if err == nil || len(lines) != 1 || lines[0]["level"] != "ERROR" || lines[0]["msg"] != "meshd failed" ||
			!strings.Contains(lines[0]["error"].(string), c.want) || stdout.Len() != 0 {
			t.Errorf("meshd %q: %v; stderr:\n%sstdout:\n%s\nwant one JSON error line naming %q", c.args, err, stderr.String(), stdout.String(), c.want)
		}
	}
	var stderr bytes.Buffer
	root := newRoot(&bytes.Buffer{}, &stderr)
	root.SetArgs([]string{"--log-format", "text"})
	if err := root.Execute(); err == nil || !strings.HasPrefix(stderr.String(), "time=") || !strings.Contains(stderr.String(), `error="--data-dir is required"`) {
		t.Errorf("--log-format text: %v %q, want a text log line", err, stderr.String())
	}
}

// TestHelpListsCommandsAndFlags: the subcommands and the double-dash flags
// are in the help, and no broken usage line (a backquoted phrase pflag
// would take for the value's name).
func TestHelpListsCommandsAndFlags(t *testing.T) {
	var out bytes.Buffer
	root := newRoot(&out, &out)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	help := out.String()
	for _, want := range []string{"operator", "version", "--data-dir string", "--log-format json|text", "--metrics", "/readyz", "Examples:"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, "  -data-dir") {
		t.Errorf("help shows a single-dash long flag:\n%s", help)
	}
}

// TestBuiltBinarySaysItsCommit: `go build` (with VCS stamping on, go's
// default) gives a meshd whose version and --version are the commit it
// was built from, never "dev"; make build passes the same through
// -ldflags.
func TestBuiltBinarySaysItsCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds meshd")
	}
	bin := filepath.Join(t.TempDir(), "meshd")
	// -buildvcs=true: this machine's go env may turn stamping off.
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(bin, args...).Output()
		v := strings.TrimSpace(string(out))
		if err != nil || !regexp.MustCompile(`^[0-9a-f]{7}(-dirty)?$`).MatchString(v) {
			t.Fatalf("meshd %s: %q %v, want the commit's short hash", args[0], v, err)
		}
		commit := strings.TrimSuffix(v, "-dirty")
		if err := exec.Command("git", "cat-file", "-e", commit+"^{commit}").Run(); err != nil {
			t.Errorf("meshd %s: %q is no commit of this repository: %v", args[0], v, err)
		}
	}
	mk, err := exec.Command("make", "-s", "-n", "-C", "../..", "build").Output()
	if err != nil {
		t.Skipf("make: %v", err)
	}
	if !strings.Contains(string(mk), `-ldflags "-X minimesh/internal/version.Version=`) {
		t.Errorf("make build does not set the version:\n%s", mk)
	}
	_ = os.Remove(bin)
}
