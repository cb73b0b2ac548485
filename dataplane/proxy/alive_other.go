//go:build !unix

package proxy

import "net"

// connAlive cannot peek here: a connection the app closed shows when used.
func connAlive(net.Conn) bool { return true }
