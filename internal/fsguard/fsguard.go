//go:build unix

// Package fsguard opens directories and files that hold a process's secrets
// (mesh-proxy's state dir, meshd's data dir, the operator credential) so
// that nothing another user placed there is ever used.
//
// The rule: a directory is trusted only when it is ours. OpenDir walks the
// path one component at a time with openat(O_NOFOLLOW), so a symbolic link
// anywhere on the path is refused (no check-then-use race), and the
// directory it ends on must be owned by the effective user and not writable
// by group or others. The parents may belong to anyone and may be writable
// by others (Kubernetes mounts an emptyDir as a root-owned 0777 directory,
// and the proxy makes its 0700 state dir inside): what is read and written
// afterwards goes through the opened directory's descriptor, so a parent's
// owner who renames the directory away or puts another in its place does
// not redirect us; a directory they made is not ours, and is refused.
//
// Files are opened with O_NOFOLLOW and must be regular files owned by the
// effective user: a secret (a private key) must have no group or other
// permission bits, anything else no group or other write bit. New files are
// written to an O_CREAT|O_EXCL|O_NOFOLLOW temporary file, synced and renamed
// into place.
package fsguard

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUntrusted is wrapped by every refusal: a symbolic link on a path, a
// directory or file owned by another user, or one others can write.
var ErrUntrusted = errors.New("untrusted")

// Dir is a directory opened and checked by OpenDir. Its methods work through
// the directory's descriptor, never its path.
type Dir struct {
	fd   int
	path string
	mode fs.FileMode // permission bits when opened
}

// OpenDir opens path as a trusted directory: no component of it (made
// absolute) may be a symbolic link, and the directory itself must be owned
// by the effective user and not be writable by group or others. With create,
// missing components are made with mode 0700. A directory that does not
// exist (without create) is an error wrapping fs.ErrNotExist.
func OpenDir(path string, create bool) (*Dir, error) {
	if path == "" {
		return nil, errors.New("fsguard: empty directory path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("fsguard: %s: %w", path, err)
	}
	fd, err := openDir(unix.AT_FDCWD, "/")
	if err != nil {
		return nil, fmt.Errorf("fsguard: open /: %w", err)
	}
	cur := "/"
	for _, name := range strings.Split(strings.TrimPrefix(abs, "/"), "/") {
		if name == "" {
			continue
		}
		next := filepath.Join(cur, name)
		nfd, err := openDir(fd, name)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, name, 0o700); err == nil || errors.Is(err, unix.EEXIST) {
				nfd, err = openDir(fd, name)
			}
		}
		if err != nil {
			err = describe(fd, name, next, err)
			_ = unix.Close(fd)
			if next != abs {
				return nil, fmt.Errorf("fsguard: %s: %w", path, err)
			}
			return nil, fmt.Errorf("fsguard: %w", err)
		}
		_ = unix.Close(fd)
		fd, cur = nfd, next
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("fsguard: %s: %w", abs, err)
	}
	mode := fs.FileMode(st.Mode & 0o7777)
	if err := checkOwner(abs, "directory", &st); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	if mode&0o022 != 0 {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("fsguard: directory %s has mode %v: other users can write it, so what it holds cannot be trusted (chmod go-w, or use a directory of your own): %w", abs, mode.Perm(), ErrUntrusted)
	}
	return &Dir{fd: fd, path: abs, mode: mode}, nil
}

// Path is the directory's absolute path.
func (d *Dir) Path() string { return d.path }

// Mode is the directory's permission bits when it was opened.
func (d *Dir) Mode() fs.FileMode { return d.mode }

// Close releases the directory's descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// OpenDir opens a subdirectory name of d with the same rules as OpenDir.
func (d *Dir) OpenDir(name string, create bool) (*Dir, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	p := filepath.Join(d.path, name)
	fd, err := openDir(d.fd, name)
	if errors.Is(err, unix.ENOENT) && create {
		if err = unix.Mkdirat(d.fd, name, 0o700); err == nil || errors.Is(err, unix.EEXIST) {
			fd, err = openDir(d.fd, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fsguard: %w", describe(d.fd, name, p, err))
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("fsguard: %s: %w", p, err)
	}
	if err := checkOwner(p, "directory", &st); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	mode := fs.FileMode(st.Mode & 0o7777)
	if mode&0o022 != 0 {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("fsguard: directory %s has mode %v: other users can write it (chmod go-w): %w", p, mode.Perm(), ErrUntrusted)
	}
	return &Dir{fd: fd, path: p, mode: mode}, nil
}

// Check reports whether the regular file name exists in d and is one we
// may use: owned by the effective user, not a symbolic link, and (secret)
// with no group or other permission bits, or (not secret) no group or other
// write bit. A missing file is (false, nil).
func (d *Dir) Check(name string, secret bool) (bool, error) {
	f, err := d.open(name, secret)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_ = f.Close()
	return true, nil
}

// ReadFile reads the regular file name of d, refused unless Check's rules
// hold; it reads at most max bytes (a larger file is an error). A missing
// file is an error wrapping fs.ErrNotExist.
func (d *Dir) ReadFile(name string, secret bool, max int64) ([]byte, error) {
	f, err := d.open(name, secret)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("fsguard: read %s: %w", f.Name(), err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("fsguard: %s is larger than %d bytes", f.Name(), max)
	}
	return b, nil
}

func (d *Dir) open(name string, secret bool) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	p := filepath.Join(d.path, name)
	var fd int
	var err error
	for {
		fd, err = unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("fsguard: %s: %w", p, fs.ErrNotExist)
		}
		return nil, fmt.Errorf("fsguard: %w", describe(d.fd, name, p, err))
	}
	f := os.NewFile(uintptr(fd), p)
	if err := CheckFile(f, secret); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// CheckFile checks an open file by its descriptor: a regular file owned by
// the effective user whose mode has no group or other bits (secret) or no
// group or other write bit.
func CheckFile(f *os.File, secret bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("fsguard: %s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("fsguard: %s is not a regular file: %w", f.Name(), ErrUntrusted)
	}
	if err := checkOwner(f.Name(), "file", &st); err != nil {
		return err
	}
	mode := fs.FileMode(st.Mode & 0o777)
	if secret && mode&0o077 != 0 {
		return fmt.Errorf("fsguard: %s has mode %v, want 0600: a secret other users can read is not used (chmod 600, or remove it to have a new one made): %w", f.Name(), mode, ErrUntrusted)
	}
	if mode&0o022 != 0 {
		return fmt.Errorf("fsguard: %s has mode %v: other users can write it, so it is not used (chmod go-w): %w", f.Name(), mode, ErrUntrusted)
	}
	return nil
}

// CheckMounted checks an open file that may come from a mounted volume (a
// Kubernetes Secret: root-owned, reached through symbolic links, 0440 for
// the pod's group): a regular file owned by the effective user or root,
// with no group or other write bit, and (secret) nothing for others.
func CheckMounted(f *os.File, secret bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("fsguard: %s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("fsguard: %s is not a regular file: %w", f.Name(), ErrUntrusted)
	}
	if euid := os.Geteuid(); st.Uid != 0 && int(st.Uid) != euid {
		return fmt.Errorf("fsguard: file %s is owned by uid %d, neither this process's user (uid %d) nor root: another user's file is not trusted: %w", f.Name(), st.Uid, euid, ErrUntrusted)
	}
	mode := fs.FileMode(st.Mode & 0o777)
	if mode&0o022 != 0 {
		return fmt.Errorf("fsguard: %s has mode %v: other users can write it, so it is not used (chmod go-w): %w", f.Name(), mode, ErrUntrusted)
	}
	if secret && mode&0o007 != 0 {
		return fmt.Errorf("fsguard: %s has mode %v: a secret every user can read is not used (chmod o-rwx): %w", f.Name(), mode, ErrUntrusted)
	}
	return nil
}

// ReadMounted reads the file at path that may come from a mounted volume
// (a Kubernetes Secret, reached through symbolic links): opened
// O_NONBLOCK so a FIFO cannot hang the reader, checked by CheckMounted
// (a regular file owned by this process's user or root, not writable by
// group or others; secret: nothing for others), and at most max bytes.
// Every refusal wraps ErrUntrusted and names the file; the content never
// appears in an error.
func ReadMounted(path string, secret bool, max int64) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fsguard: open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := CheckMounted(f, secret); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("fsguard: read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("fsguard: %s is larger than %d bytes", path, max)
	}
	return b, nil
}

// WriteFile replaces name in d with data, atomically: an O_EXCL|O_NOFOLLOW
// temporary file with mode perm, written, synced and renamed over name,
// then the directory synced. The file is never readable beyond perm.
func (d *Dir) WriteFile(name string, data []byte, perm fs.FileMode) (err error) {
	if err := checkName(name); err != nil {
		return err
	}
	p := filepath.Join(d.path, name)
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return fmt.Errorf("fsguard: write %s: %w", p, err)
	}
	tmp := "." + name + ".tmp-" + hex.EncodeToString(r[:])
	fd, err := unix.Openat(d.fd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()&0o700))
	if err != nil {
		return fmt.Errorf("fsguard: write %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(d.path, tmp))
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = unix.Unlinkat(d.fd, tmp, 0)
		}
	}()
	// Created with the owner's bits only; the wanted mode (umask aside)
	// is set before any data.
	if err = f.Chmod(perm.Perm()); err != nil {
		return fmt.Errorf("fsguard: write %s: %w", p, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("fsguard: write %s: %w", p, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsguard: write %s: %w", p, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("fsguard: write %s: %w", p, err)
	}
	if err = unix.Renameat(d.fd, tmp, d.fd, name); err != nil {
		return fmt.Errorf("fsguard: write %s: %w", p, err)
	}
	_ = unix.Fsync(d.fd) // best effort: makes the rename durable
	return nil
}

// Remove removes the entry name of d (a symbolic link itself, not its
// target). A missing entry is not an error.
func (d *Dir) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("fsguard: remove %s: %w", filepath.Join(d.path, name), err)
	}
	return nil
}

// OpenAppend opens (creating with mode perm) the file at path for
// appending, never following a symbolic link in its last component, and
// refuses a file that is not a regular file owned by the effective user.
// An existing file's mode is set to perm.
func OpenAppend(path string, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, perm)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("fsguard: %s is a symbolic link: give the file itself: %w", path, ErrUntrusted)
		}
		return nil, fmt.Errorf("fsguard: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("fsguard: %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		_ = f.Close()
		return nil, fmt.Errorf("fsguard: %s is not a regular file: %w", path, ErrUntrusted)
	}
	if err := checkOwner(path, "file", &st); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("fsguard: %w", err)
	}
	return f, nil
}

func openDir(dirfd int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// describe turns an openat error on dirfd/name into one that says what is
// wrong with path.
func describe(dirfd int, name, path string, err error) error {
	var st unix.Stat_t
	if serr := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		buf := make([]byte, 4096)
		target := "?"
		if n, rerr := unix.Readlinkat(dirfd, name, buf); rerr == nil {
			target = string(buf[:n])
		}
		return fmt.Errorf("%s is a symbolic link (to %s): symbolic links are refused on this path, give the real path: %w", path, target, ErrUntrusted)
	}
	if errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("%s is not a directory", path)
	}
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: %w", path, fs.ErrNotExist)
	}
	return fmt.Errorf("%s: %w", path, err)
}

func checkOwner(path, what string, st *unix.Stat_t) error {
	if euid := os.Geteuid(); int(st.Uid) != euid {
		return fmt.Errorf("fsguard: %s %s is owned by uid %d, not by this process's user (uid %d): another user's %s is not trusted: %w", what, path, st.Uid, euid, what, ErrUntrusted)
	}
	return nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("fsguard: %q is not a file name", name)
	}
	return nil
}
