package proxy

import (
	"errors"

	"minimesh/dataplane/edge"
)

// Sentinel errors. Errors returned by this package wrap one of these (or an
// error of the standard library) and carry the "proxy:" prefix.
var (
	// ErrInvalidConfig is wrapped by every Validate error.
	ErrInvalidConfig = errors.New("proxy: invalid config")

	// ErrNoSVID marks a handshake refused because a (non-certs) SVID source
	// had no valid SVID for us; new handshakes fail until it has one.
	// certs.SVIDSource reports certs.ErrNoSVID or certs.ErrSVIDExpired.
	ErrNoSVID = edge.ErrNoSVID

	// ErrNoPeerID means a request reached the inbound without a verified
	// peer SPIFFE ID; it is refused, never forwarded.
	ErrNoPeerID = errors.New("proxy: no verified peer identity")

	// ErrInvalidSnapshot is wrapped by CompileTable's errors: the snapshot
	// is refused (NACKed) and the previous table stays in force.
	ErrInvalidSnapshot = errors.New("proxy: invalid snapshot")

	// ErrInvalidTarget: a HeaderTarget value that does not parse.
	ErrInvalidTarget = errors.New("proxy: invalid target")

	// ErrUnknownService: the app called a destination that is not a
	// service of the mesh. Nothing is sent (the app gets 502): traffic
	// never leaves the mesh in clear.
	ErrUnknownService = errors.New("proxy: not a service of the mesh")

	// ErrNoEndpoint: the service has no endpoint to send to (the app gets
	// 503).
	ErrNoEndpoint = errors.New("proxy: no endpoint")

	// ErrOverloaded: the service already has its maximum of requests in
	// flight from this proxy (the app gets 503 at once).
	ErrOverloaded = errors.New("proxy: too many requests in flight")
)

// Policy errors (policy.go, revoke.go).
var (
	// ErrRevoked: the peer's identity is denied or a certificate of its
	// chain is revoked (the snapshot's denied_identities and
	// revoked_serials); its connections are refused and closed.
	ErrRevoked = edge.ErrRevoked

	// ErrForbidden: the authorization policy denied the request (403).
	ErrForbidden = errors.New("proxy: denied by authorization policy")
)
