package proxy

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (or an
// error of the standard library) and carry the "proxy:" prefix.
var (
	// ErrInvalidConfig is wrapped by every Validate error.
	ErrInvalidConfig = errors.New("proxy: invalid config")

	// ErrNoSVID marks a handshake refused because a (non-certs) SVID source
	// had no valid SVID for us; new handshakes fail until it has one.
	// certs.SVIDSource reports certs.ErrNoSVID or certs.ErrSVIDExpired.
	ErrNoSVID = errors.New("proxy: no valid SVID")

	// ErrNoPeerID means a request reached the inbound without a verified
	// peer SPIFFE ID; it is refused, never forwarded.
	ErrNoPeerID = errors.New("proxy: no verified peer identity")
)
