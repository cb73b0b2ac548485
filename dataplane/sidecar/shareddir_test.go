package sidecar

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSharedDirMustExist: a --shared-dir that does not exist (or is a
// file) is refused at start, naming the flag, instead of NACKing every
// snapshot while the listeners wait for the first one forever.
func TestSharedDirMustExist(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(t.TempDir(), "missing"), file} {
		_, err := New(Config{ControlPlane: "127.0.0.1:1", Service: "api", App: "127.0.0.1:2", StateDir: t.TempDir(), SharedDir: dir})
		if err == nil || !strings.Contains(err.Error(), "--shared-dir "+dir) {
			t.Errorf("New with --shared-dir %s: %v, want an error naming --shared-dir", dir, err)
		}
	}
	if _, err := New(Config{ControlPlane: "127.0.0.1:1", Service: "api", App: "127.0.0.1:2", StateDir: t.TempDir(), SharedDir: t.TempDir()}); err != nil && strings.Contains(err.Error(), "--shared-dir") {
		t.Errorf("an existing --shared-dir refused: %v", err)
	}
}
