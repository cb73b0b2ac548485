package store_test

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"minimesh/controlplane/store"
	"minimesh/internal/fsguard"
)

func mustRefuse(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, fsguard.ErrUntrusted) || !strings.Contains(err.Error(), want) {
		t.Fatalf("CheckDataDir: %v; want an ErrUntrusted refusal saying %q", err, want)
	}
}

// newDataDir is a data dir as meshd leaves it: 0700, a data file and an
// operator credential, all 0600.
func newDataDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := store.CheckDataDir(dir); err != nil {
		t.Fatalf("fresh dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "meshd.db"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "operator"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"svid.pem", "svid_key.pem", "bundle.pem"} {
		if err := os.WriteFile(filepath.Join(dir, "operator", f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.CheckDataDir(dir); err != nil {
		t.Fatalf("meshd's own data dir: %v", err)
	}
	return dir
}

func TestCheckDataDirRefusesSymlinks(t *testing.T) {
	dir := newDataDir(t)
	link := filepath.Join(t.TempDir(), "data-link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, store.CheckDataDir(link), "is a symbolic link")
	mustRefuse(t, store.CheckDataDir(filepath.Join(link, "sub")), "is a symbolic link")

	// The data file a link (to a file of ours elsewhere).
	other := filepath.Join(t.TempDir(), "other.db")
	if err := os.WriteFile(other, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "meshd.db")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, filepath.Join(dir, "meshd.db")); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, store.CheckDataDir(dir), "is a symbolic link")

	// The operator credential's directory a link.
	dir = newDataDir(t)
	if err := os.Rename(filepath.Join(dir, "operator"), filepath.Join(dir, "real-operator")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "real-operator"), filepath.Join(dir, "operator")); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, store.CheckDataDir(dir), "is a symbolic link")
}

func TestCheckDataDirRefusesLooseFiles(t *testing.T) {
	dir := newDataDir(t)
	if err := os.Chmod(filepath.Join(dir, "meshd.db"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, store.CheckDataDir(dir), "want 0600")

	dir = newDataDir(t)
	if err := os.Chmod(filepath.Join(dir, "operator", "svid_key.pem"), 0o640); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, store.CheckDataDir(dir), "want 0600")

	dir = newDataDir(t)
	if err := os.Chmod(filepath.Join(dir, "operator"), 0o777); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, store.CheckDataDir(dir), "other users can write it")
}

// The report: a data dir pre-created by another user, who kept the
// operator credential meshd wrote there. Run as root, the dir (or its data
// file, or the operator dir) is chowned to nobody.
func TestCheckDataDirRefusesAnotherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("ownership test cannot run under CI=true without root")
		}
		t.Skip("ownership test skipped: it needs root (to chown to nobody); under CI=true it fails instead")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	want := "is owned by uid " + u.Uid
	for _, rel := range []string{".", "meshd.db", "operator", "operator/svid_key.pem"} {
		t.Run(rel, func(t *testing.T) {
			dir := newDataDir(t)
			if err := os.Chown(filepath.Join(dir, rel), uid, gid); err != nil {
				t.Fatal(err)
			}
			mustRefuse(t, store.CheckDataDir(dir), want)
		})
	}
	// Made by the other user before meshd ever ran: empty, 0700, theirs.
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, store.CheckDataDir(dir), want)
}
