package authz

import "errors"

// Sentinel errors. Compile's errors wrap one of these and carry the
// "authz:" prefix.
var (
	// ErrInvalidPolicy: a policy does not validate, or holds a path that
	// no normalized request path can equal (such as one with "%2F").
	ErrInvalidPolicy = errors.New("authz: invalid policy")
	// ErrMixedServices: the policies given to one Compile name different
	// services; compile one Engine per service.
	ErrMixedServices = errors.New("authz: policies of different services")
)
