package logadapter

import "golang.org/x/sys/unix"

// openat2 opens rel beneath dirfd with the kernel refusing every symbolic
// link and any escape (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS); ENOSYS before Linux 5.6.
func openat2(dirfd int, rel string, flags int) (int, error) {
	how := &unix.OpenHow{
		Flags:   uint64(flags),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(dirfd, rel, how)
		if err != unix.EINTR {
			return fd, err
		}
	}
}
