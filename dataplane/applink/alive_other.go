//go:build !unix

package applink

import "net"

// peeker cannot peek here: a connection the app closed shows when used,
// and bytes it sent unasked are read as the next answer.
type peeker struct{}

func (*peeker) alive(net.Conn) bool { return true }

func connAlive(net.Conn) bool { return true }
