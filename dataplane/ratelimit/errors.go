package ratelimit

import "errors"

// Sentinel errors, with the "ratelimit:" prefix.
var (
	// ErrInvalidLimit: a RateLimit does not validate.
	ErrInvalidLimit = errors.New("ratelimit: invalid rate limit")
	// ErrMixedServices: the RateLimits given to one Compile are for
	// different services; compile one Limiter per service.
	ErrMixedServices = errors.New("ratelimit: rate limits of different services")
	// ErrInvalidConfig is wrapped by Config.Validate's errors.
	ErrInvalidConfig = errors.New("ratelimit: invalid config")
)
