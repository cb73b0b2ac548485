package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"minimesh/certs"
	"minimesh/dataplane/admin"
	"minimesh/dataplane/filesync"
	"minimesh/dataplane/gitsync"
	"minimesh/dataplane/topz"
	meshv1 "minimesh/proto/mesh/v1"
)

// gitRepo makes a bare repository with one commit on main holding
// index.html, and returns its path and the commit.
func gitRepo(t *testing.T) (string, string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git binary")
	}
	dir := t.TempDir()
	bare, work := filepath.Join(dir, "site.git"), filepath.Join(dir, "work")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "--quiet", "--bare", bare)
	run("init", "--quiet", work)
	if err := os.WriteFile(filepath.Join(work, "index.html"), []byte("<h1>v1</h1>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("-C", work, "add", "index.html")
	run("-C", work, "commit", "--quiet", "-m", "v1")
	run("-C", work, "push", "--quiet", bare, "HEAD:refs/heads/main")
	return bare, run("-C", work, "rev-parse", "HEAD")
}

// runRoles runs the roles and an admin server on a loopback port, as New
// wires them, with an agent that is always ready.
func runRoles(t *testing.T, cfg Config) (*Sidecar, string) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Clock = certs.SystemClock
	cfg.Registry = prometheus.NewRegistry()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sidecar{cfg: cfg, Roles: &Roles{}}
	adm, err := admin.New(admin.Config{Listener: ln, Ready: s.ready(func() error { return nil }), Detail: s.detail, Registry: cfg.Registry, Logger: cfg.Logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.addRoles(adm); err != nil {
		ln.Close()
		t.Fatal(err)
	}
	s.add("admin", adm.Run)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s, "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Git sync runs as a sidecar task: /ready waits for the first checkout,
// /gitsync shows it, and the app's file is there through the link.
func TestRolesGitSyncAndReady(t *testing.T) {
	repo, sha := gitRepo(t)
	shared := t.TempDir()
	s, url := runRoles(t, Config{SharedDir: shared, Roles: RolesConfig{
		GitRepo: repo, GitRef: "main", GitInterval: 20 * time.Millisecond, GitDir: "www", GitLink: "html",
	}})
	if s.Roles.Git == nil {
		t.Fatal("no git syncer")
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, body := get(t, url+"/ready")
		if code == http.StatusOK {
			break
		}
		if !strings.Contains(body, "no checkout yet") {
			t.Fatalf("/ready before the first checkout: %d %q", code, body)
		}
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
	}
	b, err := os.ReadFile(filepath.Join(shared, "www", "html", "index.html"))
	if err != nil || string(b) != "<h1>v1</h1>\n" {
		t.Fatalf("checkout through the link: %q %v", b, err)
	}
	code, body := get(t, url+"/gitsync")
	var st gitsync.Status
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil || st.Commit != sha || st.Path != filepath.Join(shared, "www", "html") {
		t.Errorf("/gitsync: %d %v %+v", code, err, st)
	}
	if _, body := get(t, url+"/metrics"); !strings.Contains(body, "minimesh_gitsync_commit_timestamp_seconds") {
		t.Error("git sync metrics not on /metrics")
	}

	// The repository goes away: the last good checkout keeps serving, the
	// proxy stays ready, and /ready says what fails.
	if err := os.Rename(repo, repo+".gone"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		code, body := get(t, url+"/ready")
		if code == http.StatusOK && strings.Contains(body, "gitsync:") && strings.Contains(body, sha) {
			break
		}
		if code != http.StatusOK {
			t.Fatalf("/ready turned %d on a git failure with a good checkout: %q", code, body)
		}
		if time.Now().After(deadline) {
			_, gs := get(t, url+"/gitsync")
			t.Fatalf("/ready never showed the git failure: %q; /gitsync: %s", body, gs)
		}
	}
	if b, err := os.ReadFile(filepath.Join(shared, "www", "html", "index.html")); err != nil || string(b) != "<h1>v1</h1>\n" {
		t.Fatalf("last good checkout after the failure: %q %v", b, err)
	}
}

// /topz and /procz are on the admin port, served to loopback clients.
func TestRolesTopzOnAdmin(t *testing.T) {
	s, url := runRoles(t, Config{})
	code, body := get(t, url+"/topz?format=json")
	var tab topz.Table
	if err := json.Unmarshal([]byte(body), &tab); code != http.StatusOK || err != nil {
		t.Fatalf("/topz: %d %v %.200s", code, err, body)
	}
	found := false
	for _, r := range tab.Processes {
		found = found || r.PID == os.Getpid()
	}
	if !found {
		t.Errorf("/topz does not list this process")
	}
	code, body = get(t, fmt.Sprintf("%s/procz/%d", url, os.Getpid()))
	if code != http.StatusOK || !strings.Contains(body, "SOCKETS") || !strings.Contains(body, strings.TrimPrefix(url, "http://")) {
		t.Errorf("/procz: %d %.300s", code, body)
	}
	// The same data for meshd's stream, without HTTP.
	if p, err := s.Roles.Topz.Inspect(context.Background(), os.Getpid()); err != nil || len(p.Sockets) == 0 {
		t.Errorf("Inspect: %v, %d sockets", err, len(p.Sockets))
	}
}

func TestRolesTopzOff(t *testing.T) {
	_, url := runRoles(t, Config{Roles: RolesConfig{Topz: TopzOff}})
	if code, _ := get(t, url+"/topz"); code != http.StatusNotFound {
		t.Errorf("/topz with --topz=off: %d", code)
	}
}

// ConfigFile resources may not land in the directory git sync owns.
func TestConfigFilesKeepOutOfGitDir(t *testing.T) {
	for _, tc := range []struct {
		roles RolesConfig
		path  string
		ok    bool
	}{
		{RolesConfig{GitRepo: "https://example.com/site.git"}, "git/current/index.html", false},
		{RolesConfig{GitRepo: "https://example.com/site.git", GitDir: "www"}, "www/x", false},
		{RolesConfig{GitRepo: "https://example.com/site.git", GitDir: "www"}, "git/x", true},
		{RolesConfig{}, "git/x", true}, // no git sync: nothing reserved
	} {
		cfg := Config{SharedDir: t.TempDir(), Roles: tc.roles, Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()}
		fs, err := sharedFiles(cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fs.Sync([]filesync.File{{Path: tc.path, Content: []byte("x")}})
		if (err == nil) != tc.ok {
			t.Errorf("git dir %q, ConfigFile %s: err = %v, want ok %v", tc.roles.GitDir, tc.path, err, tc.ok)
		}
	}
}

func TestRolesConfigRefused(t *testing.T) {
	for name, cfg := range map[string]Config{
		"git without shared dir": {Roles: RolesConfig{GitRepo: "https://example.com/x.git"}},
		"git dir escapes":        {SharedDir: t.TempDir(), Roles: RolesConfig{GitRepo: "x", GitDir: "../x"}},
		"bad topz":               {Roles: RolesConfig{Topz: "everyone"}},
		"bad git ref":            {SharedDir: t.TempDir(), Roles: RolesConfig{GitRepo: "x", GitRef: "--upload-pack=x"}},
	} {
		s := &Sidecar{cfg: cfg, Roles: &Roles{}}
		s.cfg.Logger = slog.New(slog.DiscardHandler)
		s.cfg.Registry = prometheus.NewRegistry()
		adm, err := admin.New(admin.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.addRoles(adm); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name == "bad git ref" && !errors.Is(err, gitsync.ErrInvalidConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Query answers meshd's relayed requests with the same structs as /topz
// and /procz, as JSON.
func TestRolesQuery(t *testing.T) {
	s, _ := runRoles(t, Config{Roles: RolesConfig{Topz: TopzOff}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx := context.Background()

	b, err := s.Roles.Query(ctx, &meshv1.Request{Id: 1, Query: &meshv1.Request_Topz{Topz: &meshv1.TopzQuery{}}})
	var tab topz.Table
	if err != nil || json.Unmarshal(b, &tab) != nil || len(tab.Processes) == 0 {
		t.Fatalf("topz query: %v %.200s", err, b)
	}
	b, err = s.Roles.Query(ctx, &meshv1.Request{Id: 2, Query: &meshv1.Request_Procz{Procz: &meshv1.ProczQuery{Pid: int32(os.Getpid())}}})
	var p topz.Process
	if err != nil || json.Unmarshal(b, &p) != nil {
		t.Fatalf("procz query: %v %.200s", err, b)
	}
	listening := false
	for _, sk := range p.Sockets {
		listening = listening || (sk.Local == ln.Addr().String() && sk.State == "LISTEN")
	}
	if !listening {
		t.Errorf("procz query does not show the listener %s: %+v", ln.Addr(), p.Sockets)
	}
	if _, err := s.Roles.Query(ctx, &meshv1.Request{Id: 3, Query: &meshv1.Request_Procz{Procz: &meshv1.ProczQuery{Pid: 1 << 30}}}); !errors.Is(err, topz.ErrNoProcess) {
		t.Errorf("procz of a missing pid: %v", err)
	}
	if _, err := s.Roles.Query(ctx, &meshv1.Request{Id: 4}); err == nil {
		t.Error("an empty query was answered")
	}
}
