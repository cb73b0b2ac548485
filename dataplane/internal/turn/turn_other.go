//go:build !unix

package turn

import "net"

// Conn holds nothing where the package's system calls are not available.
type Conn struct{ net.Conn }

// Hold does nothing here.
func (c *Conn) Hold() {}

// Wrap returns c.
func Wrap(c net.Conn) net.Conn { return c }

// Of returns nil: no connection holds here.
func Of(net.Conn) *Conn { return nil }

// WrapListener returns ln.
func WrapListener(ln net.Listener) net.Listener { return ln }

// Exchanges returns 0.
func (c *Conn) Exchanges() int64 { return 0 }
