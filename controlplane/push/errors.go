package push

import "errors"

var (
	// ErrNotAllowed: the caller's identity may not serve the service.
	ErrNotAllowed = errors.New("push: identity may not serve this service")
	// ErrBadHello: the Hello message is invalid.
	ErrBadHello = errors.New("push: invalid hello")
	// ErrNotConnected: the proxy has no open stream.
	ErrNotConnected = errors.New("push: proxy not connected")
)
