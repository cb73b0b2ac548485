//go:build !unix

package meshlink

import "net"

const (
	peekEmpty = iota
	peekData
	peekGone
)

// peeker without MSG_PEEK: every idle connection is taken as alive; one
// the remote closed fails the request, which is sent again when that is
// safe (Pool.RoundTrip).
type peeker struct{}

func (*peeker) state(net.Conn) int { return peekEmpty }
