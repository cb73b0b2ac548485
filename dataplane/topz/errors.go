package topz

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (or an
// error of the standard library) and carry the "topz:" prefix.
var (
	// ErrInvalidConfig is wrapped by every Config.Validate error.
	ErrInvalidConfig = errors.New("topz: invalid config")

	// ErrNoProcess means the pid is not a process visible to us.
	ErrNoProcess = errors.New("topz: no such process")

	// ErrParse marks a /proc file that does not parse.
	ErrParse = errors.New("topz: cannot parse")
)
