//go:build unix

package fsguard_test

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"minimesh/internal/fsguard"
)

func mustUntrusted(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, fsguard.ErrUntrusted) {
		t.Fatalf("err = %v, want one wrapping ErrUntrusted", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to say %q", err, want)
	}
}

func TestOpenDirCreatesPrivateDirs(t *testing.T) {
	base := t.TempDir()
	p := filepath.Join(base, "a", "b")
	d, err := fsguard.OpenDir(p, true)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, q := range []string{filepath.Join(base, "a"), p} {
		fi, err := os.Stat(q)
		if err != nil || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
			t.Errorf("%s: %v %v, want a 0700 directory", q, fi.Mode(), err)
		}
	}
	if _, err := fsguard.OpenDir(filepath.Join(base, "missing"), false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir without create: %v, want ErrNotExist", err)
	}
}

func TestOpenDirRefusesSymlinks(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.MkdirAll(filepath.Join(real, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	// The directory itself a link.
	if err := os.Symlink(filepath.Join(real, "state"), filepath.Join(base, "state-link")); err != nil {
		t.Fatal(err)
	}
	_, err := fsguard.OpenDir(filepath.Join(base, "state-link"), true)
	mustUntrusted(t, err, "is a symbolic link")
	// A link on the way to it.
	if err := os.Symlink(real, filepath.Join(base, "parent-link")); err != nil {
		t.Fatal(err)
	}
	_, err = fsguard.OpenDir(filepath.Join(base, "parent-link", "state"), true)
	mustUntrusted(t, err, base+"/parent-link is a symbolic link")
	// With create, a link to a missing dir makes nothing through it.
	if err := os.Symlink(filepath.Join(real, "new"), filepath.Join(base, "dangling")); err != nil {
		t.Fatal(err)
	}
	_, err = fsguard.OpenDir(filepath.Join(base, "dangling"), true)
	mustUntrusted(t, err, "is a symbolic link")
	if _, err := os.Lstat(filepath.Join(real, "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenDir made the link's target: %v", err)
	}
}

func TestOpenDirRefusesWritableByOthers(t *testing.T) {
	for _, mode := range []os.FileMode{0o770, 0o702, 0o777, 0o1777} {
		p := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, err := fsguard.OpenDir(p, true)
		mustUntrusted(t, err, "other users can write it")
	}
	// Readable by others is fine for a state dir (the key is 0600);
	// only writing matters.
	p := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := fsguard.OpenDir(p, false)
	if err != nil {
		t.Fatalf("0755 dir: %v", err)
	}
	d.Close()
}

// A parent others can write (Kubernetes' emptyDir is 0777) is fine: the
// decision is on the directory itself.
func TestOpenDirAcceptsWritableParent(t *testing.T) {
	base := filepath.Join(t.TempDir(), "volume")
	if err := os.Mkdir(base, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o777); err != nil {
		t.Fatal(err)
	}
	d, err := fsguard.OpenDir(filepath.Join(base, "proxy"), true)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}

func TestReadFileRules(t *testing.T) {
	dir := t.TempDir()
	d, err := fsguard.OpenDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	write := func(name string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("key", 0o600)
	write("key-0644", 0o644)
	write("key-0640", 0o640)
	write("pub-0644", 0o644)
	write("pub-0666", 0o666)
	if b, err := d.ReadFile("key", true, 100); err != nil || string(b) != "key" {
		t.Errorf("0600 secret: %q %v", b, err)
	}
	_, err = d.ReadFile("key-0644", true, 100)
	mustUntrusted(t, err, "want 0600")
	_, err = d.ReadFile("key-0640", true, 100)
	mustUntrusted(t, err, "want 0600")
	if _, err := d.ReadFile("pub-0644", false, 100); err != nil {
		t.Errorf("0644 public file: %v", err)
	}
	_, err = d.ReadFile("pub-0666", false, 100)
	mustUntrusted(t, err, "other users can write it")
	if _, err := d.ReadFile("key", true, 2); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("over the limit: %v", err)
	}
	if _, err := d.ReadFile("absent", true, 100); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("absent: %v, want ErrNotExist", err)
	}
	if ok, err := d.Check("absent", true); ok || err != nil {
		t.Errorf("Check(absent) = %v, %v", ok, err)
	}
	// A link to a good file of ours is refused all the same.
	if err := os.Symlink(filepath.Join(dir, "key"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	_, err = d.ReadFile("link", true, 100)
	mustUntrusted(t, err, "is a symbolic link")
	_, err = d.Check("link", true)
	mustUntrusted(t, err, "is a symbolic link")
	// Not a regular file.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = d.ReadFile("sub", false, 100)
	mustUntrusted(t, err, "not a regular file")
	if _, err := d.ReadFile("../x", false, 100); err == nil {
		t.Error("a name with a slash was read")
	}
}

func TestWriteFileReplacesALinkNotItsTarget(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("unchanged"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "key.pem")); err != nil {
		t.Fatal(err)
	}
	d, err := fsguard.OpenDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.WriteFile("key.pem", []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "unchanged" {
		t.Errorf("the link's target was written: %q", b)
	}
	fi, err := os.Lstat(filepath.Join(dir, "key.pem"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v %v, want a 0600 regular file", fi.Mode(), err)
	}
	if b, err := d.ReadFile("key.pem", true, 100); err != nil || string(b) != "new" {
		t.Errorf("read back %q %v", b, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestOpenAppendRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "access.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	_, err := fsguard.OpenAppend(link, 0o600)
	mustUntrusted(t, err, "is a symbolic link")
	// A dangling link would have made the file: nothing is created.
	dangling := filepath.Join(dir, "dangling.log")
	if err := os.Symlink(filepath.Join(dir, "made"), dangling); err != nil {
		t.Fatal(err)
	}
	_, err = fsguard.OpenAppend(dangling, 0o600)
	mustUntrusted(t, err, "is a symbolic link")
	if _, err := os.Lstat(filepath.Join(dir, "made")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the dangling link's target was created: %v", err)
	}
	f, err := fsguard.OpenAppend(filepath.Join(dir, "real.log"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// requireRoot skips without root, except under CI=true, where it fails
// (as make test-netns does).
func requireRoot(t *testing.T) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("ownership test needs root and cannot run under CI=true without it")
		}
		t.Skip("ownership test skipped: it needs root (to chown to nobody); under CI=true it fails instead")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("user nobody: %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

func TestOwnershipRefusesAnotherUsersDirAndFiles(t *testing.T) {
	uid, gid := requireRoot(t)
	// A state dir another user made (mode 0700, theirs).
	p := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
	_, err := fsguard.OpenDir(p, true)
	mustUntrusted(t, err, "is owned by uid "+strconv.Itoa(uid))

	// A key another user planted in our dir, with the right mode.
	dir := t.TempDir()
	for _, name := range []string{"planted.pem", "planted.log"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(dir, name), uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	d, err := fsguard.OpenDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.ReadFile("planted.pem", true, 100)
	mustUntrusted(t, err, "is owned by uid "+strconv.Itoa(uid))
	_, err = fsguard.OpenAppend(filepath.Join(dir, "planted.log"), 0o600)
	mustUntrusted(t, err, "is owned by uid "+strconv.Itoa(uid))
}

// ReadMounted reads a mounted Secret's file through its links (as the
// kubelet lays them out), and refuses what others could write or plant,
// a secret every user can read, a FIFO (without hanging) and a file over
// the bound.
func TestReadMountedRules(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("secret-bytes"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A Secret volume: ..data -> ..2026_12_05, token -> ..data/token, 0440.
	data := filepath.Join(dir, "..2026_12_05")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "token"), []byte("id.secret\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..2026_12_05", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/token", filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	if b, err := fsguard.ReadMounted(filepath.Join(dir, "token"), true, 64); err != nil || string(b) != "id.secret\n" {
		t.Fatalf("a Secret's file through its links: %q, %v", b, err)
	}
	if _, err := fsguard.ReadMounted(write("cert.pem", 0o644), false, 64); err != nil {
		t.Fatalf("a certificate others may read: %v", err)
	}
	_, err := fsguard.ReadMounted(write("key-world.pem", 0o604), true, 64)
	mustUntrusted(t, err, "a secret every user can read is not used")
	_, err = fsguard.ReadMounted(write("cert-writable.pem", 0o646), false, 64)
	mustUntrusted(t, err, "other users can write it")
	if _, err := fsguard.ReadMounted(write("big", 0o600), false, 4); err == nil || !strings.Contains(err.Error(), "larger than 4 bytes") {
		t.Fatalf("a file over the bound: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = fsguard.ReadMounted(fifo, true, 64) // returns at once: O_NONBLOCK
	mustUntrusted(t, err, "is not a regular file")
	if err == nil || strings.Contains(err.Error(), "secret-bytes") {
		t.Fatalf("an error must not carry a file's content: %v", err)
	}

	uid, gid := requireRoot(t)
	planted := write("planted", 0o600)
	if err := os.Chown(planted, uid, gid); err != nil {
		t.Fatal(err)
	}
	_, err = fsguard.ReadMounted(planted, true, 64)
	mustUntrusted(t, err, "is owned by uid "+strconv.Itoa(uid))
}
