package agent

import "errors"

var (
	// ErrNoIdentity: the agent holds no valid SVID.
	ErrNoIdentity = errors.New("agent: no valid SVID")
	// ErrNoToken: a bootstrap is needed but there is no join token.
	ErrNoToken = errors.New("agent: no join token to bootstrap with")
)
