package route

import "errors"

// Sentinel errors. Compile's errors wrap one of these and carry the
// "route:" prefix.
var (
	// ErrInvalidRoute: a Route does not validate, or holds a path that no
	// normalized request path can equal (such as one with "%2F").
	ErrInvalidRoute = errors.New("route: invalid route")
	// ErrMixedServices: the Routes given to one Compile are for different
	// services; compile one Table per service.
	ErrMixedServices = errors.New("route: routes of different services")
)
