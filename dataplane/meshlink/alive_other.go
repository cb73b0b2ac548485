//go:build !unix

package meshlink

import "net"

const (
	peekEmpty = iota
	peekData
	peekGone
)

// peeker without MSG_PEEK: every idle connection is looked at through TLS
// (poolConn.alive's read with a past deadline).
type peeker struct{}

func (*peeker) state(net.Conn) int { return peekData }
