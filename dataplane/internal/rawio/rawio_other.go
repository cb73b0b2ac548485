//go:build !linux

package rawio

import "net"

func wrap(c net.Conn) net.Conn { return c }

func unwrap(c net.Conn) net.Conn { return c }
