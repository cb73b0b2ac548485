package gitsync

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (or an
// error of the standard library) and carry the "gitsync:" prefix.
var (
	// ErrInvalidConfig is wrapped by every Config.Validate error.
	ErrInvalidConfig = errors.New("gitsync: invalid config")

	// ErrGit marks a git command that failed or timed out; the error
	// carries the end of its stderr.
	ErrGit = errors.New("gitsync: git failed")

	// ErrUntrusted marks Root or the bare repository refused before git
	// ran in it: not this process's user's, writable by others, or reached
	// through a symbolic link (Syncer.checkRepo). The error names the path
	// and the reason.
	ErrUntrusted = errors.New("gitsync: untrusted directory")

	// ErrNoCheckout is what Ready returns before the first checkout is live.
	ErrNoCheckout = errors.New("gitsync: no checkout yet")
)
