package balancer

import "errors"

// Sentinel errors, with the "balancer:" prefix.
var (
	// ErrNoEndpoints: the balancer has no endpoint to pick.
	ErrNoEndpoints = errors.New("balancer: no endpoints")
	// ErrInvalidConfig is wrapped by Config.Validate's errors.
	ErrInvalidConfig = errors.New("balancer: invalid config")
)
