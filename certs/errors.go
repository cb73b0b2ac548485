package certs

import "errors"

// Sentinel errors. Every error returned by this package wraps one of these
// (or an error from the standard library) and carries the "certs: " prefix.
var (
	// ErrInvalidID: a SPIFFE ID or one of its parts has the wrong shape.
	ErrInvalidID = errors.New("certs: invalid SPIFFE ID")
	// ErrInvalidConfig: a Config struct failed Validate.
	ErrInvalidConfig = errors.New("certs: invalid config")
	// ErrInvalidCAState: LoadCA could not use the serialized state.
	ErrInvalidCAState = errors.New("certs: invalid CA state")
	// ErrRotation: a rotation step is not possible in the CA's current phase.
	ErrRotation = errors.New("certs: rotation not possible")
	// ErrCAExpired: the intermediate CA can no longer sign a useful certificate.
	ErrCAExpired = errors.New("certs: CA expired")

	// ErrCSRMalformed: the CSR is not parseable DER or is too large.
	ErrCSRMalformed = errors.New("certs: malformed CSR")
	// ErrCSRSignature: the CSR's self-signature does not verify.
	ErrCSRSignature = errors.New("certs: bad CSR signature")
	// ErrCSRIdentity: the CSR does not name exactly the expected SPIFFE ID.
	ErrCSRIdentity = errors.New("certs: CSR identity mismatch")
	// ErrCSRExtraSAN: the CSR asks for DNS, IP, e-mail, other or extra URI SANs.
	ErrCSRExtraSAN = errors.New("certs: CSR requests extra SANs")
	// ErrCSRCA: the CSR asks for a CA certificate.
	ErrCSRCA = errors.New("certs: CSR requests CA")
	// ErrWeakKey: the key is of an unsupported type or too weak.
	ErrWeakKey = errors.New("certs: weak or unsupported key")

	// ErrNoSVID: an SVIDSource has nothing set yet.
	ErrNoSVID = errors.New("certs: no SVID")
	// ErrSVIDExpired: the current SVID is expired per the source's clock.
	ErrSVIDExpired = errors.New("certs: SVID expired")
	// ErrNoBundle: a BundleSource has no bundle for the trust domain.
	ErrNoBundle = errors.New("certs: no bundle")
	// ErrPeerUnverified: a peer's certificate chain did not verify.
	ErrPeerUnverified = errors.New("certs: peer unverified")
	// ErrUnauthorized: a verified peer ID is not allowed by an authorizer.
	ErrUnauthorized = errors.New("certs: peer unauthorized")
	// ErrInvalidPin: a pin is not "sha256:<64 hex digits>".
	ErrInvalidPin = errors.New("certs: invalid pin")
	// ErrPinMismatch: no self-signed certificate in the server's chain matches the pin,
	// or the chain does not verify up to it for the expected ID.
	ErrPinMismatch = errors.New("certs: pin mismatch")

	// ErrInvalidPEM: PEM input is missing, has unexpected blocks or bad contents.
	ErrInvalidPEM = errors.New("certs: invalid PEM")
)
