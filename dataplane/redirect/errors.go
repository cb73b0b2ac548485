package redirect

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (or an
// error of the standard library) and carry the "redirect:" prefix.
var (
	// ErrInvalidConfig is wrapped by every Validate and flag error.
	ErrInvalidConfig = errors.New("redirect: invalid config")

	// ErrIptables wraps a failed iptables or iptables-restore run; the
	// error text carries the command's output.
	ErrIptables = errors.New("redirect: iptables failed")

	// ErrNotRedirected means the connection has no NAT record: it reached
	// the listener directly, not through a REDIRECT rule.
	ErrNotRedirected = errors.New("redirect: connection was not redirected")

	// ErrUnsupported means the platform or connection type cannot give an
	// original destination (not Linux, or not a TCP socket).
	ErrUnsupported = errors.New("redirect: original destination unsupported")
)
