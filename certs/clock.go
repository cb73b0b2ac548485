package certs

import "time"

// Clock is injectable everywhere time matters.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the real time.
var SystemClock Clock = systemClock{}

func clockOrSystem(c Clock) Clock {
	if c == nil {
		return SystemClock
	}
	return c
}
