package admin

import "errors"

// ErrInvalidConfig is wrapped by every Validate error.
var ErrInvalidConfig = errors.New("admin: invalid config")
