package filesync

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestReloadByHTTP(t *testing.T) {
	var posts atomic.Int32
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/-/reload" {
			http.Error(w, "wrong request", http.StatusBadRequest)
			return
		}
		posts.Add(1)
		if fail.Load() {
			http.Error(w, "config invalid", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	s, dir := newSyncer(t, Config{Reload: Reload{URL: srv.URL + "/-/reload"}})

	res := mustSync(t, s, File{Path: "a.conf", Content: []byte("1")})
	if !res.Reloaded || posts.Load() != 1 {
		t.Fatalf("after a change: reloaded=%v posts=%d", res.Reloaded, posts.Load())
	}
	res = mustSync(t, s, File{Path: "a.conf", Content: []byte("1")})
	if res.Reloaded || posts.Load() != 1 {
		t.Fatalf("no change must not reload: reloaded=%v posts=%d", res.Reloaded, posts.Load())
	}

	fail.Store(true)
	// A failed reload is no NACK: the files were applied; Result and
	// Status say the reload failed.
	res = mustSync(t, s, File{Path: "a.conf", Content: []byte("2")})
	if !strings.Contains(res.ReloadError, "500") || !strings.Contains(res.ReloadError, "config invalid") || res.Reloaded {
		t.Fatalf("failed reload: %+v", res)
	}
	if got := readFile(t, filepath.Join(dir, "a.conf")); got != "2" || len(res.Written) != 1 || res.ReloadError == "" {
		t.Errorf("files must stay applied when the reload fails: %q %+v", got, res)
	}
	if st := s.Status(); !strings.Contains(st.Error, "reload") || len(st.Files) != 1 || st.Files[0].Size != 1 {
		t.Errorf("status %+v", st)
	}
	if got := counterValue(s.m.reloads.WithLabelValues("http", "error")); got != 1 {
		t.Errorf("reload errors %v", got)
	}
	if got := counterValue(s.m.syncs.WithLabelValues("reload_error")); got != 1 {
		t.Errorf("reload_error syncs %v", got)
	}
	// The next good reload clears the error.
	fail.Store(false)
	if res := mustSync(t, s, File{Path: "a.conf", Content: []byte("3")}); !res.Reloaded || s.Status().Error != "" {
		t.Errorf("after a good reload: %+v, status error %q", res, s.Status().Error)
	}
}

func TestReloadHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	s, _ := newSyncer(t, Config{Reload: Reload{URL: srv.URL, Timeout: 50 * time.Millisecond}})
	if res := mustSync(t, s, File{Path: "a", Content: []byte("1")}); !strings.Contains(res.ReloadError, "deadline exceeded") {
		t.Fatalf("a reload URL that never answers: %+v", res)
	}
}

// startNamed starts a copy of sleep under a name no other process has, so
// the signal reaches only it.
func startNamed(t *testing.T) (*exec.Cmd, string, <-chan struct{}) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	name := "fsrl" + strings.ToLower(rand.Text()[:10]) // within comm's 15 bytes
	dir, err := os.MkdirTemp("", "filesync-proc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
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
	// Wait until the child has exec'd: until then /proc shows the test's name.
	for i := 0; ; i++ {
		if procs, _ := FindProcesses("/proc", name); len(procs) == 1 {
			break
		}
		if i == 2000 {
			t.Fatal("child never showed up in /proc")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd, name, exited
}

func TestReloadBySignal(t *testing.T) {
	cmd, name, done := startNamed(t)
	procs, err := FindProcesses("/proc", name)
	if err != nil || len(procs) != 1 || procs[0].PID != cmd.Process.Pid || procs[0].UID != os.Getuid() {
		t.Fatalf("FindProcesses = %+v, %v; want pid %d", procs, err, cmd.Process.Pid)
	}
	s, _ := newSyncer(t, Config{Reload: Reload{Process: name, Signal: syscall.SIGUSR1}})
	res := mustSync(t, s, File{Path: "a", Content: []byte("1")})
	if !res.Reloaded {
		t.Fatalf("not reloaded: %+v", res)
	}
	<-done // sleep dies of SIGUSR1: the signal arrived
	st := cmd.ProcessState
	ws, _ := st.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGUSR1 {
		t.Fatalf("child ended with %v, want killed by SIGUSR1", st)
	}
	if got := counterValue(s.m.reloads.WithLabelValues("signal", "ok")); got != 1 {
		t.Errorf("signal reloads %v", got)
	}
}

func TestReloadSignalNoProcess(t *testing.T) {
	s, _ := newSyncer(t, Config{Reload: Reload{Process: "no-such-" + strings.ToLower(rand.Text()[:8])}})
	res := mustSync(t, s, File{Path: "a", Content: []byte("1")})
	if !strings.Contains(res.ReloadError, "no process named") {
		t.Fatalf("reload error %q", res.ReloadError)
	}
	err := Signal("/proc", "no-such-"+strings.ToLower(rand.Text()[:8]), syscall.SIGHUP)
	if !errors.Is(err, ErrProcessNotFound) {
		t.Fatalf("Signal: %v, want ErrProcessNotFound", err)
	}
}

const helperEnv = "FILESYNC_TEST_SIGNAL_NAME"

// signalHelper runs in a copy of the test binary as another user: it
// signals the named process (owned by root) and prints the error.
func signalHelper() int {
	err := Signal("/proc", os.Getenv(helperEnv), syscall.SIGUSR1)
	fmt.Println(err)
	if err == nil {
		return 1
	}
	return 0
}

// Signalling a process of another user without CAP_KILL fails, and the
// error says CAP_KILL is what is missing. The sender is this test binary
// re-run as nobody; the target is a root-owned child.
func TestSignalAnotherUserNeedsCapKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the sender as another user")
	}
	cmd, name, done := startNamed(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(cmd.Path) // 0755, removed by startNamed's cleanup
	bin := filepath.Join(dir, "sender")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sender := exec.Command(bin, "-test.run=^$")
	sender.Env = []string{helperEnv + "=" + name}
	sender.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := sender.CombinedOutput()
	if err != nil {
		t.Fatalf("sender: %v: %s", err, out)
	}
	msg := string(out)
	for _, want := range []string{"CAP_KILL", "operation not permitted", "uid 0", strconv.Itoa(cmd.Process.Pid)} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", strings.TrimSpace(msg), want)
		}
	}
	select {
	case <-done:
		t.Fatalf("the target was signalled anyway: %v", cmd.ProcessState)
	default:
	}
}
