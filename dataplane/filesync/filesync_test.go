package filesync

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

func newSyncer(t *testing.T, cfg Config) (*Syncer, string) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg.Dir
}

func mustSync(t *testing.T, s *Syncer, files ...File) Result {
	t.Helper()
	res, err := s.Sync(files)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return res
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSyncWritesChangesAndRemoves(t *testing.T) {
	reg := prometheus.NewRegistry()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s, dir := newSyncer(t, Config{Clock: fixedClock{at}, Registerer: reg})
	// A file the app (not us) put there: never ours to remove.
	foreign := filepath.Join(dir, "app.conf")
	if err := os.WriteFile(foreign, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}

	res := mustSync(t, s,
		File{Path: "nginx/conf.d/site.conf", Mode: 0o640, Content: []byte("server {}\n")},
		File{Path: "./flags//beta", Content: []byte("on")},
	)
	if want := []string{"flags/beta", "nginx/conf.d/site.conf"}; !slices.Equal(res.Written, want) || !res.At.Equal(at) {
		t.Fatalf("first sync: written %v at %v, want %v at %v", res.Written, res.At, want, at)
	}
	if got := readFile(t, filepath.Join(dir, "nginx/conf.d/site.conf")); got != "server {}\n" {
		t.Errorf("content %q", got)
	}
	for name, mode := range map[string]fs.FileMode{"nginx/conf.d/site.conf": 0o640, "flags/beta": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v %v, want %v", name, fi.Mode().Perm(), err, mode)
		}
	}

	// The same set again changes nothing.
	res = mustSync(t, s,
		File{Path: "nginx/conf.d/site.conf", Mode: 0o640, Content: []byte("server {}\n")},
		File{Path: "flags/beta", Content: []byte("on")},
	)
	if res.Changed() || res.Unchanged != 2 {
		t.Fatalf("same set: %+v, want nothing written", res)
	}

	// A change, a mode change and a removal.
	res = mustSync(t, s,
		File{Path: "nginx/conf.d/site.conf", Mode: 0o600, Content: []byte("server { listen 80; }\n")},
	)
	if !slices.Equal(res.Written, []string{"nginx/conf.d/site.conf"}) || !slices.Equal(res.Removed, []string{"flags/beta"}) {
		t.Fatalf("change: %+v", res)
	}
	if got := readFile(t, filepath.Join(dir, "nginx/conf.d/site.conf")); got != "server { listen 80; }\n" {
		t.Errorf("changed content %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "flags/beta")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("flags/beta should be removed: %v", err)
	}

	// An app that edits our file gets it back.
	if err := os.WriteFile(filepath.Join(dir, "nginx/conf.d/site.conf"), []byte("edited"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = mustSync(t, s, File{Path: "nginx/conf.d/site.conf", Mode: 0o600, Content: []byte("server { listen 80; }\n")})
	if len(res.Written) != 1 {
		t.Errorf("drifted file not rewritten: %+v", res)
	}

	// The empty set removes all of ours and none of the app's.
	res = mustSync(t, s)
	if !slices.Equal(res.Removed, []string{"nginx/conf.d/site.conf"}) {
		t.Errorf("empty set removed %v", res.Removed)
	}
	if got := readFile(t, foreign); got != "mine" {
		t.Errorf("foreign file changed: %q", got)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*", "*", ".minimesh-filesync-tmp-*"))
	if len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}

	st := s.Status()
	if len(st.Files) != 0 || st.Error != "" || !st.LastChange.Equal(at) {
		t.Errorf("status %+v", st)
	}
	if got := counterValue(s.m.syncs.WithLabelValues("applied")); got != 4 {
		t.Errorf("applied syncs %v, want 4", got)
	}
	if got := counterValue(s.m.syncs.WithLabelValues("unchanged")); got != 1 {
		t.Errorf("unchanged syncs %v, want 1", got)
	}
}

func TestStatusListsOwnedFilesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	s1, _ := newSyncer(t, Config{Dir: dir})
	mustSync(t, s1, File{Path: "a", Content: []byte("1")}, File{Path: "b", Content: []byte("2")})
	st := s1.Status()
	if len(st.Files) != 2 || st.Files[0].Path != "a" || st.Files[0].Size != 1 || st.Files[0].Mode != "0644" || st.Files[0].Written.IsZero() {
		t.Fatalf("status files %+v", st.Files)
	}
	if fi, err := os.Stat(filepath.Join(dir, ManifestName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("manifest: %v %v", fi, err)
	}
	// A new Syncer (a restarted proxy) still knows what it owns.
	s2, _ := newSyncer(t, Config{Dir: dir})
	res := mustSync(t, s2, File{Path: "a", Content: []byte("1")})
	if !slices.Equal(res.Removed, []string{"b"}) || res.Unchanged != 1 {
		t.Errorf("after restart: %+v", res)
	}
	if got := s2.Status().Files[0].Written; !got.Equal(st.Files[0].Written) {
		t.Errorf("unchanged file's written time %v, want %v", got, st.Files[0].Written)
	}
}

// An app reading the file in a loop sees one whole version or another,
// never a part or a mix, across many changes and the final removal.
func TestReaderNeverSeesPartialFile(t *testing.T) {
	s, dir := newSyncer(t, Config{})
	const size = 256 << 10
	version := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, size) }
	name := filepath.Join(dir, "conf", "big.txt")
	mustSync(t, s, File{Path: "conf/big.txt", Content: version(0)})

	var (
		stop    atomic.Bool
		reads   atomic.Int64
		wg      sync.WaitGroup
		mu      sync.Mutex
		badRead string
	)
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				b, err := os.ReadFile(name)
				if errors.Is(err, fs.ErrNotExist) {
					continue // after the final removal
				}
				reads.Add(1)
				if err != nil || len(b) != size || bytes.Count(b, b[:1]) != size {
					mu.Lock()
					badRead = "a partial or mixed read"
					if err != nil {
						badRead = err.Error()
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	for i := 1; i <= 60; i++ {
		mustSync(t, s, File{Path: "conf/big.txt", Content: version(i)})
	}
	res := mustSync(t, s)
	stop.Store(true)
	wg.Wait()
	if badRead != "" {
		t.Fatalf("reader saw %s", badRead)
	}
	if reads.Load() == 0 {
		t.Fatal("reader never read")
	}
	if !slices.Equal(res.Removed, []string{"conf/big.txt"}) {
		t.Errorf("removal: %+v", res)
	}
	t.Logf("%d whole reads", reads.Load())
}

func TestUnsafeAndInvalidPathsRefused(t *testing.T) {
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		files  []File
		path   string // the path the error names
		reason string
		kind   error
	}{
		{"dot dot", []File{{Path: "../secret"}}, "../secret", `".."`, ErrUnsafePath},
		{"dot dot deep", []File{{Path: "a/../../secret"}}, "a/../../secret", `".."`, ErrUnsafePath},
		{"dot dot inside", []File{{Path: "a/../b"}}, "a/../b", `".."`, ErrUnsafePath},
		{"absolute", []File{{Path: secret}}, secret, "absolute", ErrUnsafePath},
		{"through symlink out", []File{{Path: "out/secret"}}, "out/secret", `symlink "out"`, ErrUnsafePath},
		{"through symlink deep", []File{{Path: "real/out/x"}}, "real/out/x", `symlink "real/out"`, ErrUnsafePath},
		{"through symlink in", []File{{Path: "in/x"}}, "in/x", `symlink "in"`, ErrUnsafePath},
		{"symlink file", []File{{Path: "filelink"}}, "filelink", "is a symlink", ErrUnsafePath},
		{"parent is a file", []File{{Path: "plain/x"}}, "plain/x", "not a directory", ErrInvalidFile},
		{"target is a dir", []File{{Path: "real"}}, "real", "not a regular file", ErrInvalidFile},
		{"empty", []File{{Path: ""}}, "", "empty", ErrInvalidFile},
		{"the dir itself", []File{{Path: "./"}}, "./", "directory itself", ErrInvalidFile},
		{"NUL", []File{{Path: "a\x00b"}}, "a\x00b", "NUL", ErrInvalidFile},
		{"manifest", []File{{Path: ManifestName}}, ManifestName, "reserved", ErrInvalidFile},
		{"duplicate", []File{{Path: "x"}, {Path: "./x"}}, "./x", "twice", ErrInvalidFile},
		{"setuid", []File{{Path: "x", Mode: 0o4755}}, "x", "beyond 0777", ErrInvalidFile},
		{"too big", []File{{Path: "x", Content: make([]byte, 1025)}}, "x", "at most 1024", ErrInvalidFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, dir := newSyncer(t, Config{MaxFileSize: 1024})
			for _, l := range [][2]string{{outside, "out"}, {".", "in"}, {secret, "filelink"}} {
				if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(filepath.Join(dir, "real"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(dir, "real", "out")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "plain"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			// A good file first in the set: it must not be written either.
			files := append([]File{{Path: "aaa-good", Content: []byte("x")}}, tt.files...)
			for i := range files {
				if files[i].Content == nil {
					files[i].Content = []byte("pwned")
				}
			}
			_, err := s.Sync(files)
			var pe *PathError
			if !errors.As(err, &pe) || !errors.Is(err, tt.kind) {
				t.Fatalf("err = %v, want a *PathError wrapping %v", err, tt.kind)
			}
			if pe.Path != tt.path || !strings.Contains(pe.Reason, tt.reason) || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("err = %v (path %q), want path %q and reason containing %q", err, pe.Path, tt.path, tt.reason)
			}
			if got := readFile(t, secret); got != "outside" {
				t.Errorf("file outside the directory changed: %q", got)
			}
			if _, err := os.Stat(filepath.Join(outside, "x")); err == nil {
				t.Error("a file was created outside the directory")
			}
			if _, err := os.Lstat(filepath.Join(dir, "aaa-good")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused set wrote its good file: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(dir, ManifestName)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused set wrote the manifest: %v", err)
			}
			if st := s.Status(); !strings.Contains(st.Error, tt.reason) {
				t.Errorf("status error %q", st.Error)
			}
			if got := counterValue(s.m.syncs.WithLabelValues("refused")); got != 1 {
				t.Errorf("refused syncs %v", got)
			}
		})
	}
}

func TestRefusedSetKeepsPreviousFiles(t *testing.T) {
	s, dir := newSyncer(t, Config{})
	mustSync(t, s, File{Path: "keep", Content: []byte("v1")})
	if _, err := s.Sync([]File{{Path: "keep", Content: []byte("v2")}, {Path: "../x"}}); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("err = %v", err)
	}
	if got := readFile(t, filepath.Join(dir, "keep")); got != "v1" {
		t.Errorf("a refused set changed a file: %q", got)
	}
	if st := s.Status(); len(st.Files) != 1 || st.Error == "" {
		t.Errorf("status after refusal: %+v", st)
	}
	// The next good set clears the error.
	mustSync(t, s, File{Path: "keep", Content: []byte("v3")})
	if st := s.Status(); st.Error != "" {
		t.Errorf("error not cleared: %q", st.Error)
	}
}

// A file of ours that someone replaced with a symlink or a directory is
// no longer ours: it is left alone, and nothing is removed through it.
// A file in a reserved directory (git sync's) is refused with the whole
// set; files beside it are not.
func TestReservedDirectoryRefused(t *testing.T) {
	s, dir := newSyncer(t, Config{Reserved: []string{"./www/"}})
	mustSync(t, s, File{Path: "wwwx/a", Content: []byte("1")}, File{Path: "conf/www", Content: []byte("2")})
	for _, p := range []string{"www", "www/index.html", "./www//x/y"} {
		_, err := s.Sync([]File{{Path: "keep", Content: []byte("3")}, {Path: p, Content: []byte("x")}})
		var pe *PathError
		if !errors.Is(err, ErrInvalidFile) || !errors.As(err, &pe) || !strings.Contains(pe.Reason, "git sync") {
			t.Errorf("%s: err = %v, want a refusal naming git sync", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused set wrote a file: %v", err)
	}
}

func TestRemovalNeverFollowsSymlinks(t *testing.T) {
	outside := t.TempDir()
	target := filepath.Join(outside, "victim")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, dir := newSyncer(t, Config{})
	mustSync(t, s, File{Path: "f", Content: []byte("1")}, File{Path: "d/victim", Content: []byte("2")})
	if err := os.Remove(filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "f")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "d")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "d")); err != nil {
		t.Fatal(err)
	}
	res := mustSync(t, s)
	if len(res.Removed) != 0 {
		t.Errorf("removed %v through symlinks", res.Removed)
	}
	if got := readFile(t, target); got != "keep me" {
		t.Errorf("file outside changed: %q", got)
	}
	if st := s.Status(); len(st.Files) != 0 {
		t.Errorf("still owns %+v", st.Files)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{Dir: "/x"}, true},
		{"no dir", Config{}, false},
		{"negative", Config{Dir: "/x", MaxFiles: -1}, false},
		{"url scheme", Config{Dir: "/x", Reload: Reload{URL: "file:///etc/passwd"}}, false},
		{"process path", Config{Dir: "/x", Reload: Reload{Process: "/usr/sbin/nginx"}}, false},
		{"reload", Config{Dir: "/x", Reload: Reload{URL: "http://127.0.0.1:8080/-/reload", Process: "nginx"}}, true},
		{"reserved", Config{Dir: "/x", Reserved: []string{"git"}}, true},
		{"reserved escapes", Config{Dir: "/x", Reserved: []string{"../git"}}, false},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
			t.Errorf("%s: Validate() = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(signalHelper())
	}
	goleak.VerifyTestMain(m)
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
