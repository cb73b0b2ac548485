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
