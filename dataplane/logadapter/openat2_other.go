//go:build unix && !linux

package logadapter

import "golang.org/x/sys/unix"

// openat2 is Linux's: elsewhere every open walks the path with O_NOFOLLOW
// on each component (openNoFollow).
func openat2(int, string, int) (int, error) { return -1, unix.ENOSYS }
