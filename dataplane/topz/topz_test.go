package topz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newCollector(t *testing.T, cfg Config) *Collector {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startSleep starts a sleep child that holds some memory and returns it.
func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// Until exec is done /proc shows a copy of the test binary.
	for i := 0; ; i++ {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); string(b) == "sleep\n" {
			return cmd
		}
		if i == 2000 {
			t.Fatal("child never became sleep")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func find(tab Table, pid int) (Row, bool) {
	for _, r := range tab.Processes {
		if r.PID == pid {
			return r, true
		}
	}
	return Row{}, false
}

func getBody(t *testing.T, url, accept string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func serve(t *testing.T, c *Collector) string {
	t.Helper()
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(mux) // a real listener on 127.0.0.1
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestSnapshotSeesChildWithRSS(t *testing.T) {
	cmd := startSleep(t)
	pid := cmd.Process.Pid
	c := newCollector(t, Config{})
	tab, err := c.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	row, ok := find(tab, pid)
	if !ok {
		t.Fatalf("pid %d not in the table of %d processes", pid, len(tab.Processes))
	}
	if row.Command != "sleep" || row.Args != "sleep 300" || row.PPID != os.Getpid() {
		t.Errorf("row %+v", row)
	}
	if row.RSSBytes <= 0 || row.Threads < 1 || row.FDs < 3 || row.State == "" {
		t.Errorf("row %+v: want RSS > 0, threads >= 1, fds >= 3", row)
	}
	if row.UID != os.Getuid() {
		t.Errorf("uid %d, want %d", row.UID, os.Getuid())
	}
	if row.Started.IsZero() || row.Started.After(time.Now().Add(time.Minute)) {
		t.Errorf("started %v", row.Started)
	}
	if tab.CPUWindowSeconds <= 0 || tab.Truncated {
		t.Errorf("table window %v truncated %v", tab.CPUWindowSeconds, tab.Truncated)
	}
	self, ok := find(tab, os.Getpid())
	if !ok || self.Threads < 2 {
		t.Errorf("this process: %+v", self)
	}
}

// The user is resolved through the passwd file; a uid it does not name
// shows as the number.
func TestUsers(t *testing.T) {
	dir := t.TempDir()
	uid := os.Getuid()
	passwd := filepath.Join(dir, "passwd")
	content := fmt.Sprintf("# comment\nbroken line\nalice:x:%d:%d:Alice:/home/alice:/bin/sh\nshadowed:x:%d:0::/:/bin/sh\n", uid, uid, uid)
	if err := os.WriteFile(passwd, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCollector(t, Config{PasswdFile: passwd, SampleInterval: -1})
	tab, err := c.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if row, _ := find(tab, os.Getpid()); row.User != "alice" {
		t.Errorf("user %q, want alice", row.User)
	}
	if tab.CPUWindowSeconds != 0 {
		t.Errorf("no sampling: window %v", tab.CPUWindowSeconds)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c = newCollector(t, Config{PasswdFile: empty, SampleInterval: -1})
	tab, err = c.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if row, _ := find(tab, os.Getpid()); row.User != strconv.Itoa(uid) {
		t.Errorf("user %q, want %d", row.User, uid)
	}
}

// CPU % over the window: this process spins for the whole Snapshot, so it
// must have used CPU in that window; an idle sleep child has used none.
func TestCPUPercentOverWindow(t *testing.T) {
	cmd := startSleep(t)
	c := newCollector(t, Config{SampleInterval: 300 * time.Millisecond})
	var done atomic.Bool
	var tab Table
	var err error
	go func() {
		tab, err = c.Snapshot(context.Background())
		done.Store(true)
	}()
	x := 0
	for !done.Load() {
		x++
	}
	_ = x
	if err != nil {
		t.Fatal(err)
	}
	self, _ := find(tab, os.Getpid())
	if self.CPUPercent <= 0 {
		t.Errorf("a spinning process shows %.2f%% CPU", self.CPUPercent)
	}
	if child, _ := find(tab, cmd.Process.Pid); child.CPUPercent != 0 {
		t.Errorf("an idle sleep shows %.2f%% CPU", child.CPUPercent)
	}
}

func TestSnapshotHonoursContext(t *testing.T) {
	c := newCollector(t, Config{SampleInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Snapshot(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestSnapshotTruncates(t *testing.T) {
	c := newCollector(t, Config{MaxProcesses: 1, SampleInterval: -1})
	tab, err := c.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Processes) > 1 || !tab.Truncated {
		t.Errorf("%d rows, truncated %v", len(tab.Processes), tab.Truncated)
	}
}

func TestTopzHandler(t *testing.T) {
	cmd := startSleep(t)
	pid := cmd.Process.Pid
	url := serve(t, newCollector(t, Config{SampleInterval: 20 * time.Millisecond}))

	for _, tc := range []struct{ name, path, accept string }{
		{"accept header", "/topz", "application/json"},
		{"query", "/topz?format=json&sort=rss", ""},
	} {
		code, ctype, body := getBody(t, url+tc.path, tc.accept)
		if code != http.StatusOK || ctype != "application/json" {
			t.Fatalf("%s: %d %s", tc.name, code, ctype)
		}
		var tab Table
		if err := json.Unmarshal([]byte(body), &tab); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if row, ok := find(tab, pid); !ok || row.RSSBytes <= 0 || row.Command != "sleep" {
			t.Errorf("%s: sleep child %+v %v", tc.name, row, ok)
		}
	}

	code, ctype, body := getBody(t, url+"/topz?sort=cpu", "")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/plain") {
		t.Fatalf("table: %d %s", code, ctype)
	}
	lines := strings.Split(body, "\n")
	header := lines[1]
	if !strings.HasPrefix(header, "PID") || !strings.Contains(header, "RSS") || !strings.Contains(header, "COMMAND") {
		t.Fatalf("header %q", header)
	}
	var line string
	for _, l := range lines[2:] {
		if f := strings.Fields(l); len(f) > 0 && f[0] == strconv.Itoa(pid) {
			line = l
		}
	}
	if !strings.HasSuffix(line, "sleep 300") {
		t.Fatalf("no row for pid %d in\n%s", pid, body)
	}
	// Aligned: every column starts where its header does.
	if strings.Index(line, "sleep 300") != strings.Index(header, "COMMAND") {
		t.Errorf("columns not aligned:\n%s\n%s", header, line)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, cfg := range []Config{{MaxProcesses: -1}, {MaxEntries: -1}, {MaxConcurrent: -1}} {
		if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestLoopbackOnly(t *testing.T) {
	h := LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	for addr, want := range map[string]int{
		"127.0.0.1:5555": 200, "[::1]:5555": 200, "[::ffff:127.0.0.1]:5555": 200,
		"10.1.2.3:5555": 403, "[2001:db8::1]:5555": 403, "garbage": 403,
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/topz", nil)
		req.RemoteAddr = addr
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", addr, rec.Code, want)
		}
	}
	// Over a real loopback connection it serves.
	srv := httptest.NewServer(h)
	defer srv.Close()
	if code, _, body := getBody(t, srv.URL, ""); code != 200 || body != "ok" {
		t.Errorf("loopback: %d %q", code, body)
	}
}
