package gitsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const nFiles = 12 // files per commit; each names its commit

// origin is a bare repository in a temp dir and a clone to commit from.
type origin struct {
	t    *testing.T
	bare string
	work string
	n    int
}

func newOrigin(t *testing.T) *origin {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git binary")
	}
	dir := t.TempDir()
	o := &origin{t: t, bare: filepath.Join(dir, "origin.git"), work: filepath.Join(dir, "work")}
	o.git("", "init", "--quiet", "--bare", o.bare)
	o.git("", "init", "--quiet", o.work)
	return o
}

func (o *origin) git(dir string, args ...string) string {
	o.t.Helper()
	if dir != "" {
		args = append([]string{"-C", dir}, args...)
	}
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+o.t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		o.t.Fatalf("git %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes nFiles files all saying "commit N", commits them at a
// distinct committer time, pushes to main and returns the hash.
func (o *origin) commit() string {
	o.t.Helper()
	o.n++
	for i := range nFiles {
		name := filepath.Join(o.work, fmt.Sprintf("dir%d", i%3), fmt.Sprintf("f%02d.txt", i))
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			o.t.Fatal(err)
		}
		body := fmt.Sprintf("commit %d\n%s", o.n, strings.Repeat("x", 4096*i))
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			o.t.Fatal(err)
		}
	}
	o.git(o.work, "add", "-A")
	date := fmt.Sprintf("GIT_COMMITTER_DATE=%d +0000", 1700000000+o.n)
	cmd := exec.Command("git", "-C", o.work, "commit", "--quiet", "-m", fmt.Sprint("commit ", o.n))
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", date, "GIT_CONFIG_NOSYSTEM=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		o.t.Fatalf("commit: %v: %s", err, out)
	}
	o.git(o.work, "push", "--quiet", o.bare, "HEAD:refs/heads/main")
	return o.git(o.work, "rev-parse", "HEAD")
}

func newSyncer(t *testing.T, cfg Config) *Syncer {
	t.Helper()
	if cfg.Root == "" {
		cfg.Root = filepath.Join(t.TempDir(), "shared", "site")
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func counter(c *prometheus.CounterVec, label string) float64 {
	var m dto.Metric
	if err := c.WithLabelValues(label).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func gauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

// commitOf reads every file of the checkout at dir (opened once) and
// returns the commit they name; it fails if they disagree.
func commitOf(dir *os.Root) (int, error) {
	seen := -1
	for i := range nFiles {
		b, err := dir.ReadFile(fmt.Sprintf("dir%d/f%02d.txt", i%3, i))
		if err != nil {
			return 0, err
		}
		var n int
		if _, err := fmt.Sscanf(string(b), "commit %d\n", &n); err != nil {
			return 0, fmt.Errorf("file %d: %q: %w", i, b[:min(len(b), 20)], err)
		}
		if want := len("commit \n") + len(fmt.Sprint(n)) + 4096*i; len(b) != want {
			return 0, fmt.Errorf("file %d of commit %d: %d bytes, want %d", i, n, len(b), want)
		}
		if seen >= 0 && n != seen {
			return 0, fmt.Errorf("mixed checkout: file %d is from commit %d, an earlier one from %d", i, n, seen)
		}
		seen = n
	}
	return seen, nil
}

// Three commits go live in turn while readers read every file of the
// checkout through the link: each read is of one complete commit, never a
// mix, and the commits never go backwards.
func TestThreeCommitsReaderNeverSeesMix(t *testing.T) {
	o := newOrigin(t)
	sha1 := o.commit()
	reg := prometheus.NewRegistry()
	s := newSyncer(t, Config{Repo: o.bare, Ref: "main", Interval: 10 * time.Millisecond, Registerer: reg})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, "commit 1", func() bool { return s.Status().Commit == sha1 })

	root := s.cfg.Root
	link := filepath.Join(root, "current")
	var (
		stop  atomic.Bool
		reads atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		fail  error
	)
	report := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if fail == nil {
			fail = err
		}
	}
	for range 2 {
		wg.Go(func() {
			last := 0
			for !stop.Load() {
				target, err := os.Readlink(link)
				if err != nil {
					report(fmt.Errorf("the link must always exist: %w", err))
					return
				}
				n, err := func() (int, error) {
					dir, err := os.OpenRoot(filepath.Join(root, target))
					if err != nil {
						return 0, err
					}
					defer dir.Close()
					return commitOf(dir)
				}()
				if errors.Is(err, fs.ErrNotExist) {
					// Only an old checkout, removed after the switch, may
					// vanish under a reader.
					if now, _ := os.Readlink(link); now == target {
						report(fmt.Errorf("the live checkout %s lost a file: %w", target, err))
						return
					}
					continue
				}
				if err != nil {
					report(err)
					return
				}
				if n < last {
					report(fmt.Errorf("went back from commit %d to %d", last, n))
					return
				}
				last = n
				reads.Add(1)
			}
		})
	}
	sha2 := o.commit()
	waitFor(t, "commit 2", func() bool { return s.Status().Commit == sha2 })
	sha3 := o.commit()
	waitFor(t, "commit 3", func() bool { return s.Status().Commit == sha3 })
	stop.Store(true)
	wg.Wait()
	if fail != nil {
		t.Fatal(fail)
	}
	if reads.Load() == 0 {
		t.Fatal("the readers never read")
	}
	t.Logf("%d consistent reads", reads.Load())

	if target, err := os.Readlink(link); err != nil || target != filepath.Join(".worktrees", sha3) {
		t.Errorf("link -> %q, %v; want a relative link to .worktrees/%s", target, err, sha3)
	}
	ents, _ := os.ReadDir(filepath.Join(root, ".worktrees"))
	if len(ents) != 1 || ents[0].Name() != sha3 {
		t.Errorf("old checkouts not removed: %v", ents)
	}
	if b, err := os.ReadFile(filepath.Join(link, "dir0", "f00.txt")); err != nil || string(b) != "commit 3\n" {
		t.Errorf("through the link: %q, %v", b, err)
	}
	st := s.Status()
	if st.LastError != "" || st.LastSuccess.IsZero() || !st.CommitTime.Equal(time.Unix(1700000003, 0)) || st.Path != link {
		t.Errorf("status %+v", st)
	}
	if got := counter(s.m.syncs, "changed"); got != 3 {
		t.Errorf("changed syncs %v, want 3", got)
	}
	if got := gauge(s.m.commitTime); got != 1700000003 {
		t.Errorf("commit timestamp metric %v", got)
	}
	if err := s.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
}

// A failing fetch keeps the last good checkout live and says why in
// Status and the metrics; the next good fetch clears the error.
func TestFailureKeepsLastGoodCheckout(t *testing.T) {
	o := newOrigin(t)
	sha1 := o.commit()
	s := newSyncer(t, Config{Repo: o.bare, Ref: "main"})
	ctx := context.Background()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	good := s.Status()

	moved := o.bare + ".moved"
	if err := os.Rename(o.bare, moved); err != nil {
		t.Fatal(err)
	}
	err := s.Sync(ctx)
	if !errors.Is(err, ErrGit) || !strings.Contains(err.Error(), "fetch") {
		t.Fatalf("fetch from a missing repository: %v", err)
	}
	st := s.Status()
	if st.Commit != sha1 || st.LastError == "" || st.Failures != 1 || !st.LastSuccess.Equal(good.LastSuccess) {
		t.Errorf("status after a failure: %+v", st)
	}
	if err := s.Ready(); err != nil {
		t.Errorf("a failure after a good checkout must stay ready: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(st.Path, "dir0", "f00.txt")); err != nil || string(b) != "commit 1\n" {
		t.Errorf("last good checkout: %q, %v", b, err)
	}
	if got := counter(s.m.syncs, "error"); got != 1 {
		t.Errorf("error syncs %v", got)
	}

	// A ref that does not exist fails the same way.
	if err := os.Rename(moved, o.bare); err != nil {
		t.Fatal(err)
	}
	bad := newSyncer(t, Config{Repo: o.bare, Ref: "no-such-branch", Root: s.cfg.Root})
	if err := bad.Sync(ctx); !errors.Is(err, ErrGit) {
		t.Errorf("missing ref: %v", err)
	}

	sha2 := o.commit()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.Commit != sha2 || st.LastError != "" || st.Failures != 0 {
		t.Errorf("after recovery: %+v", st)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := counter(s.m.syncs, "unchanged"); got != 1 {
		t.Errorf("unchanged syncs %v", got)
	}
}

func TestReadyBeforeFirstCheckout(t *testing.T) {
	s := newSyncer(t, Config{Repo: filepath.Join(t.TempDir(), "nothing.git")})
	if err := s.Ready(); !errors.Is(err, ErrNoCheckout) {
		t.Fatalf("Ready before any sync: %v", err)
	}
	if err := s.Sync(context.Background()); err == nil {
		t.Fatal("sync of a missing repository succeeded")
	}
	err := s.Ready()
	if !errors.Is(err, ErrNoCheckout) || !strings.Contains(err.Error(), "fetch") {
		t.Errorf("Ready after a failed first sync: %v", err)
	}
}

func TestRefs(t *testing.T) {
	o := newOrigin(t)
	sha1 := o.commit()
	o.git(o.work, "tag", "v1")
	o.git(o.work, "push", "--quiet", o.bare, "refs/tags/v1")
	sha2 := o.commit()
	o.git(o.bare, "symbolic-ref", "HEAD", "refs/heads/main")
	tests := []struct {
		ref  string
		want string
	}{
		{"main", sha2},
		{"refs/heads/main", sha2},
		{"", sha2}, // HEAD
		{"v1", sha1},
		{sha1, sha1},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			s := newSyncer(t, Config{Repo: o.bare, Ref: tt.ref})
			if err := s.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := s.Status().Commit; got != tt.want {
				t.Errorf("commit %s, want %s", got, tt.want)
			}
		})
	}
}

// A restarted syncer serves the checkout it left behind at once, even when
// the repository is unreachable.
func TestRestartAdoptsCheckout(t *testing.T) {
	o := newOrigin(t)
	sha1 := o.commit()
	root := filepath.Join(t.TempDir(), "site")
	first := newSyncer(t, Config{Repo: o.bare, Ref: "main", Root: root})
	if err := first.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(o.bare); err != nil {
		t.Fatal(err)
	}
	s := newSyncer(t, Config{Repo: o.bare, Ref: "main", Root: root, Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitFor(t, "the first sync attempt", func() bool { return s.Status().Failures > 0 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	st := s.Status()
	if st.Commit != sha1 || st.CommitTime.IsZero() || s.Ready() != nil {
		t.Errorf("restart did not adopt the checkout: %+v, Ready %v", st, s.Ready())
	}
}

// A remote that accepts and never answers is cut off by Timeout.
func TestGitTimeout(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git binary")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	defer func() {
		ln.Close()
		conns.Wait()
	}()
	conns.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer c.Close()
				_, _ = io.Copy(io.Discard, c) // never answer, until git is killed
			})
		}
	})
	s := newSyncer(t, Config{Repo: "git://" + ln.Addr().String() + "/site.git", Timeout: 300 * time.Millisecond})
	err = s.Sync(context.Background())
	if !errors.Is(err, ErrGit) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a git timeout", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{Repo: "https://example.com/x.git", Root: "/shared/x"}, true},
		{"no repo", Config{Root: "/x"}, false},
		{"option as repo", Config{Repo: "--upload-pack=touch /tmp/pwned", Root: "/x"}, false},
		{"option as ref", Config{Repo: "r", Ref: "--help", Root: "/x"}, false},
		{"ref with space", Config{Repo: "r", Ref: "a b", Root: "/x"}, false},
		{"no root", Config{Repo: "r"}, false},
		{"link with slash", Config{Repo: "r", Root: "/x", Link: "a/b"}, false},
		{"hidden link", Config{Repo: "r", Root: "/x", Link: ".worktrees"}, false},
		{"negative", Config{Repo: "r", Root: "/x", Interval: -1}, false},
		{"tag", Config{Repo: "r", Root: "/x", Ref: "v1.2.3", Link: "html"}, true},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestCredentialsInRepoURLNeverShown: a repository URL with credentials
// (userinfo, a token in the query) fails to fetch; the status, the error
// Ready gives (/ready, /gitsync) and the log never carry the secret.
func TestCredentialsInRepoURLNeverShown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused at once
	var logs bytes.Buffer
	repo := "http://deploy:s3cretpw@" + addr + "/site.git?access_token=t0ken"
	s := newSyncer(t, Config{Repo: repo, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	waitFor(t, "a failed sync", func() bool { return s.Status().Failures > 0 })
	cancel()
	<-done
	st := s.Status()
	shown := fmt.Sprintf("%+v\n%v\n%s", st, s.Ready(), logs.String())
	for _, secret := range []string{"s3cretpw", "t0ken"} {
		if strings.Contains(shown, secret) {
			t.Errorf("%q is shown:\n%s", secret, shown)
		}
	}
	if !strings.Contains(st.Repo, addr) || st.LastError == "" {
		t.Errorf("status lost what it should show: %+v", st)
	}
}

// A hook planted in the bare repository (by anyone who can write there)
// never runs: git worktree add would run post-checkout at each switch.
func TestPlantedHookNeverRuns(t *testing.T) {
	o := newOrigin(t)
	o.commit()
	s := newSyncer(t, Config{Repo: o.bare, Ref: "main"})
	ctx := context.Background()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "hook-ran")
	hook := filepath.Join(s.cfg.Root, repoDir, "hooks", "post-checkout")
	if err := os.MkdirAll(filepath.Dir(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hook, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sha2 := o.commit()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.Commit != sha2 {
		t.Fatalf("did not switch to the new commit: %+v", st)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a hook planted in the bare repository ran")
	}
}

// Root or the bare repository that someone else could write (or reached
// through a symbolic link) is refused before git runs in it, with the path
// and the reason; the last good checkout stays live, and putting it right
// recovers.
func TestUntrustedRootOrRepositoryRefused(t *testing.T) {
	ctx := context.Background()
	t.Run("root writable by others", func(t *testing.T) {
		o := newOrigin(t)
		o.commit()
		root := filepath.Join(t.TempDir(), "site")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(root, 0o777); err != nil {
			t.Fatal(err)
		}
		s := newSyncer(t, Config{Repo: o.bare, Ref: "main", Root: root})
		err := s.Sync(ctx)
		if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), root) || !strings.Contains(err.Error(), "other users can write") {
			t.Fatalf("Sync into a 0777 Root: %v", err)
		}
		if _, err := os.Stat(filepath.Join(root, repoDir)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("git ran in an untrusted Root: %v", err)
		}
		if st := s.Status(); st.Commit != "" || st.LastError == "" || st.Failures != 1 {
			t.Errorf("status: %+v", st)
		}
	})
	t.Run("root through a symbolic link", func(t *testing.T) {
		o := newOrigin(t)
		o.commit()
		dir := t.TempDir()
		real := filepath.Join(dir, "real")
		if err := os.Mkdir(real, 0o755); err != nil {
			t.Fatal(err)
		}
		root := filepath.Join(dir, "site")
		if err := os.Symlink(real, root); err != nil {
			t.Fatal(err)
		}
		s := newSyncer(t, Config{Repo: o.bare, Ref: "main", Root: root})
		if err := s.Sync(ctx); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("Sync into a symlinked Root: %v", err)
		}
		if _, err := os.Stat(filepath.Join(real, repoDir)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("git ran through the link: %v", err)
		}
	})
	for _, tc := range []struct {
		name, path string // path in the bare repository made writable by others
	}{
		{"repository writable by others", "."},
		{"config writable by others", "config"},
		{"hooks writable by others", "hooks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOrigin(t)
			sha1 := o.commit()
			s := newSyncer(t, Config{Repo: o.bare, Ref: "main"})
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(s.cfg.Root, repoDir, tc.path)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, fi.Mode().Perm()|0o022); err != nil {
				t.Fatal(err)
			}
			o.commit()
			err = s.Sync(ctx)
			if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), filepath.Clean(p)) {
				t.Fatalf("Sync with %s writable by others: %v", tc.path, err)
			}
			st := s.Status()
			if st.Commit != sha1 || st.Failures != 1 || s.Ready() != nil {
				t.Errorf("status after the refusal: %+v", st)
			}
			if b, err := os.ReadFile(filepath.Join(st.Path, "dir0", "f00.txt")); err != nil || string(b) != "commit 1\n" {
				t.Errorf("last good checkout: %q, %v", b, err)
			}
			if err := os.Chmod(p, fi.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
			if err := s.Sync(ctx); err != nil {
				t.Fatalf("after putting it right: %v", err)
			}
		})
	}
}

// What the syncer and git init make is not refused under a umask that
// lets the group write (git init --shared=0644). The umask is the
// process's: no test of this package runs in parallel.
func TestRepositoryModes(t *testing.T) {
	defer syscall.Umask(syscall.Umask(0o002))
	o := newOrigin(t)
	o.commit()
	s := newSyncer(t, Config{Repo: o.bare, Ref: "main"})
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{s.cfg.Root, filepath.Join(s.cfg.Root, worktreesDir), filepath.Join(s.cfg.Root, repoDir), filepath.Join(s.cfg.Root, repoDir, "config")} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o022 != 0 || fi.Mode().Perm()&0o444 != 0o444 {
			t.Errorf("%s has mode %v: want readable by all, writable by its owner only", p, fi.Mode())
		}
	}
}
