package identity

import "errors"

var (
	// ErrTokenMalformed: the token is not "<id>.<secret>".
	ErrTokenMalformed = errors.New("identity: malformed join token")
	// ErrTokenInvalid: no token has that id and secret.
	ErrTokenInvalid = errors.New("identity: invalid join token")
	// ErrTokenExpired: the token's TTL has passed.
	ErrTokenExpired = errors.New("identity: join token expired")
	// ErrTokenRevoked: the token was revoked.
	ErrTokenRevoked = errors.New("identity: join token revoked")
	// ErrTokenUsedUp: the token has no uses left.
	ErrTokenUsedUp = errors.New("identity: join token has no uses left")
	// ErrReservedIdentity: meshd's and the operator's identities are never
	// issued through tokens or Renew.
	ErrReservedIdentity = errors.New("identity: reserved identity")
	// ErrBadRequest: a request field is invalid.
	ErrBadRequest = errors.New("identity: bad request")
	// ErrCSR: the CSR was refused.
	ErrCSR = errors.New("identity: CSR refused")
	// ErrRevoked: the identity is denied or the instance revoked.
	ErrRevoked = errors.New("identity: revoked")
	// ErrUnbound: the caller's certificate is bound to no instance (issued
	// before instance binding, with no record of one).
	ErrUnbound = errors.New("identity: certificate bound to no instance")
	// ErrRateLimited: too many signatures for the instance or identity; the
	// error is a *RateLimitedError with the delay.
	ErrRateLimited = errors.New("identity: rate limited")
	// ErrNotFound: no such token.
	ErrNotFound = errors.New("identity: not found")
)

// Errors of service-account token attestation (see BootstrapSAToken); the
// reviewer's errors (kube.ErrUnauthenticated, kube.ErrNotPod,
// kube.ErrUnavailable) are wrapped as they come.
var (
	// ErrNoKubeAPI: meshd has no Kubernetes API access (--kube-api off, or
	// neither in a pod nor given --kubeconfig), so it cannot review
	// service-account tokens.
	ErrNoKubeAPI = errors.New("identity: meshd has no Kubernetes API access to review service-account tokens")
	// ErrPodMismatch: a Renew's token is of another pod or service account
	// than the certificate was issued to.
	ErrPodMismatch = errors.New("identity: service-account token of another pod")
	// ErrSATokenRequired: the certificate was issued on a service-account
	// token review and its Renew carried no token.
	ErrSATokenRequired = errors.New("identity: renewal needs a fresh service-account token")
)
