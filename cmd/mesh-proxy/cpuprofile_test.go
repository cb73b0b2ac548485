package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/daemon"
	"minimesh/internal/testlog"
)

// TestCPUProfileWrittenAtExit: a mesh-proxy run from its command line with
// --cpu-profile writes a pprof CPU profile (gzipped protobuf naming its
// sample types) to the file, 0600, when it stops; make pgo merges these.
func TestCPUProfileWrittenAtExit(t *testing.T) {
	var meshdLogs testlog.Buffer
	m := controlplanetest.Start(t, controlplane.Config{Logger: daemon.NewLogger(&meshdLogs, daemon.FormatJSON, slog.LevelWarn)})
	path := filepath.Join(t.TempDir(), "api.pprof")
	p := startProxy(t, m, "api", "--app", "127.0.0.1:1", "--inbound", freeAddr(t), "--cpu-profile", path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the profile file is not created at start: %v", err)
	}
	p.stop()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("profile mode %v, want 0600", fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("not a pprof profile (gzip): %v", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// The string table of every CPU profile runtime/pprof writes.
	for _, s := range []string{"samples", "count", "cpu", "nanoseconds"} {
		if !bytes.Contains(b, []byte(s)) {
			t.Errorf("profile has no %q in its string table (%d bytes)", s, len(b))
		}
	}
}

// TestCPUProfileRefusesASymlink: the profile is never written through a
// symlink planted at its path (the link's target stays as it was).
func TestCPUProfileRefusesASymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "profile")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if stop, err := startCPUProfile(link); err == nil {
		_ = stop()
		t.Fatal("a symlink was followed")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("the link's target was changed: %q", b)
	}
	// A refused start leaves the profiler free for the next one.
	ok := filepath.Join(dir, "ok.pprof")
	stop, err := startCPUProfile(ok)
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
