package filesync

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these (or an
// error of the standard library) and carry the "filesync:" prefix.
var (
	// ErrInvalidConfig is wrapped by every Config.Validate error.
	ErrInvalidConfig = errors.New("filesync: invalid config")

	// ErrUnsafePath marks a file refused because its path would leave the
	// directory: "..", an absolute path, or a symlink on the way. The whole
	// set is refused and nothing is written (a NACK).
	ErrUnsafePath = errors.New("filesync: unsafe path")

	// ErrInvalidFile marks a file refused for another reason: an empty or
	// duplicate path, a reserved name, a mode beyond 0777, or a size over
	// the limits. The whole set is refused and nothing is written.
	ErrInvalidFile = errors.New("filesync: invalid file")

	// ErrReload marks a failed reload after the files were applied: the
	// files are in place, the app was not told. Sync itself succeeds; the
	// error is in Result.ReloadError and Status.Error.
	ErrReload = errors.New("filesync: reload failed")

	// ErrProcessNotFound means no process with the reload name was found.
	ErrProcessNotFound = errors.New("filesync: reload process not found")
)

// PathError says which path of a desired set was refused and why. It
// unwraps to ErrUnsafePath or ErrInvalidFile.
type PathError struct {
	Path   string
	Reason string
	Kind   error // ErrUnsafePath or ErrInvalidFile
}

func (e *PathError) Error() string {
	return fmt.Sprintf("filesync: path %q refused: %s", e.Path, e.Reason)
}

func (e *PathError) Unwrap() error { return e.Kind }
