package accesslog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"minimesh/internal/fsguard"
)

// --access-log at a symbolic link (say, planted in a shared log dir and
// pointing at a file the attacker reads, or at one of ours to clobber) is
// refused, and nothing is written through it.
func TestOpenFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "theirs.log")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "access.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(link)
	if err == nil {
		f.Close()
		t.Fatal("OpenFile followed a symbolic link")
	}
	if !errors.Is(err, fsguard.ErrUntrusted) || !strings.Contains(err.Error(), "symbolic link") || !strings.HasPrefix(err.Error(), "accesslog: ") {
		t.Fatalf("OpenFile(link) = %v", err)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o644 {
		t.Errorf("the link's target was changed: %v", fi.Mode())
	}
	// A FIFO (or any non-regular file) is refused too (without a reader,
	// by the non-blocking open itself).
	fifo := filepath.Join(dir, "fifo.log")
	if err := mkfifo(fifo); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if f, err := OpenFile(fifo); err == nil {
		if f != nil {
			f.Close()
		}
		t.Errorf("OpenFile(fifo) = %v", err)
	}
}
