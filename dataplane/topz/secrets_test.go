package topz

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A process started with secrets in its argv (a join token as --token X
// and --token=X, a password flag, credentials in a git URL; the values as
// they came from an environment variable and a file) shows in /topz and
// /procz, as text and JSON, with every one of them redacted.
func TestSecretsRedactedInTopzAndProcz(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	fromEnv := "abcd.ENVSECRET0123"
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("abcd.FILESECRET456"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// sh runs `read x` (it waits for its stdin) with the rest as its
	// positional arguments, all in its /proc/<pid>/cmdline.
	cmd := exec.Command("sh", "-c", "read x", "mesh-proxy", "--service=web", "--token", fromEnv, "--token="+string(fromFile),
		"--db-password=PWSECRET789", "--git-repo=https://bob:GITSECRET@git.example.com/site.git", "--token-file="+file)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	pid := strconv.Itoa(cmd.Process.Pid)
	c := newCollector(t, Config{SampleInterval: -1})
	mux := http.NewServeMux()
	c.Register(mux)
	secrets := []string{"ENVSECRET0123", "FILESECRET456", "PWSECRET789", "GITSECRET", "bob"}
	for _, path := range []string{"/topz", "/topz?format=json", "/procz/" + pid, "/procz/" + pid + "?format=json"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, rec.Code, body)
		}
		line := ""
		text := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">").Replace(string(body)) // JSON escapes < and >
		for l := range strings.Lines(text) {
			if strings.Contains(l, "--service=web") {
				line = l
			}
		}
		if !strings.Contains(line, "--token=<redacted> --token=<redacted> --db-password=<redacted> --git-repo=https://<redacted>@git.example.com/site.git --token-file="+file) {
			t.Errorf("%s: the child's command line is not shown redacted: %q", path, line)
		}
		for _, s := range secrets {
			if strings.Contains(string(body), s) {
				t.Errorf("%s shows the secret %q", path, s)
			}
		}
	}
	// The Collector's own results (what meshd relays to meshctl top/procz).
	p, err := c.Inspect(context.Background(), cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if strings.Contains(p.Args, s) {
			t.Errorf("Inspect: Args shows %q: %s", s, p.Args)
		}
	}
}

// meshctl top and procz print what a proxy answered: a hostile one's
// strings are escaped in the table, and make no row of their own.
func TestTablesEscapeCells(t *testing.T) {
	var b strings.Builder
	WriteTable(&b, Table{Processes: []Row{{PID: 7, User: "\x1b[2J", Args: "app\n1  root  0.0  0B  1  0  S  fake\u202e", State: "S"}}})
	WriteProcess(&b, Process{Row: Row{PID: 7, Args: "x"}, Files: []OpenFile{{FD: 3, Path: "/tmp/\x1b]0;t\x07"}}, Sockets: []Socket{{Proto: "tcp", Local: "\x1b[1A:1"}}})
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07\u202e") {
		t.Errorf("raw control characters:\n%q", out)
	}
	for _, want := range []string{`\x1b[2J`, `app\x0a1  root`, `fake\u202e`, `/tmp/\x1b]0;t\x07`, `\x1b[1A:1`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}
