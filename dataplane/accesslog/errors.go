package accesslog

import "errors"

// Sentinel errors, with the "accesslog:" prefix.
var (
	// ErrInvalidSpec: an AccessLog does not validate.
	ErrInvalidSpec = errors.New("accesslog: invalid access log")
)
