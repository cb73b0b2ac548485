package logadapter

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// errNotRegular is why a matched path is skipped: it is not a regular file
// (a FIFO, device, socket, directory) or a symbolic link is on its path.
var errNotRegular = errors.New("not a regular file")

// root is the shared directory, held open: every path is resolved beneath
// it, never through a symbolic link (openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS, or O_NOFOLLOW on every component where the kernel
// has no openat2).
type root struct {
	fd      int
	noAt2   bool // openat2 returned ENOSYS: walk with O_NOFOLLOW
	dirName string
}

func openRoot(dir string) (*root, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	return &root{fd: fd, dirName: dir}, nil
}

func (r *root) Close() error { return unix.Close(r.fd) }

// open opens rel (a clean relative path, '/'-separated) beneath the root,
// without following any symbolic link, and without blocking on a FIFO
// (O_NONBLOCK; a regular file ignores it). dir asks for a directory.
func (r *root) open(rel string, dir bool) (*os.File, error) {
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK | unix.O_NOFOLLOW
	if dir {
		flags |= unix.O_DIRECTORY
	}
	if rel == "." {
		fd, err := unix.Openat(r.fd, ".", flags, 0)
		if err != nil {
			return nil, pathErr(rel, err)
		}
		return os.NewFile(uintptr(fd), rel), nil
	}
	if !r.noAt2 {
		fd, err := openat2Func(r.fd, rel, flags)
		if err == nil {
			return os.NewFile(uintptr(fd), rel), nil
		}
		if !errors.Is(err, unix.ENOSYS) {
			return nil, pathErr(rel, err)
		}
		r.noAt2 = true
	}
	fd, err := openNoFollow(r.fd, rel, flags)
	if err != nil {
		return nil, pathErr(rel, err)
	}
	return os.NewFile(uintptr(fd), rel), nil
}

// openat2Func is openat2 (ENOSYS where the system has none), replaced in
// a test by one returning ENOSYS.
var openat2Func = openat2

// openNoFollow walks rel one component at a time with O_NOFOLLOW, each
// directory opened relative to the previous one; ".." and absolute paths
// are refused.
func openNoFollow(dirfd int, rel string, flags int) (int, error) {
	if rel == "" || strings.HasPrefix(rel, "/") {
		return -1, unix.EINVAL
	}
	parts := strings.Split(rel, "/")
	cur := dirfd
	closeCur := func() {
		if cur != dirfd {
			_ = unix.Close(cur)
		}
	}
	for i, p := range parts {
		if p == "" || p == "." || p == ".." {
			closeCur()
			return -1, unix.EINVAL
		}
		f := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_DIRECTORY
		if i == len(parts)-1 {
			f = flags | unix.O_NOFOLLOW
		}
		fd, err := unix.Openat(cur, p, f, 0)
		closeCur()
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

// lstatBeneath is fstatat(AT_SYMLINK_NOFOLLOW) of rel's last component in
// its (safely opened) parent: a matched name that is not a regular file is
// never opened (opening a device can have effects).
func (r *root) lstatBeneath(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	dir, name := "", rel
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		dir, name = rel[:i], rel[i+1:]
	}
	dfd := r.fd
	if dir != "" {
		d, err := r.open(dir, true)
		if err != nil {
			return st, err
		}
		defer d.Close()
		dfd = int(d.Fd())
	}
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, pathErr(rel, err)
	}
	return st, nil
}

// openRegular opens rel for reading if it is a regular file, checked
// before opening (lstat) and on the open file (fstat).
func (r *root) openRegular(rel string) (*os.File, unix.Stat_t, error) {
	st, err := r.lstatBeneath(rel)
	if err != nil {
		return nil, st, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, st, fmt.Errorf("%s: %w (%s)", rel, errNotRegular, typeName(uint32(st.Mode)))
	}
	f, err := r.open(rel, false)
	if err != nil {
		return nil, st, err
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, st, pathErr(rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, st, fmt.Errorf("%s: %w (%s)", rel, errNotRegular, typeName(uint32(st.Mode)))
	}
	return f, st, nil
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	case unix.S_IFDIR:
		return "directory"
	}
	return "regular file"
}

func pathErr(rel string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("%s: %w (a symbolic link on its path, or outside the shared directory: %v)", rel, errNotRegular, err)
	}
	return &fs.PathError{Op: "open", Path: rel, Err: err}
}
