//go:build !linux

package redirect

import (
	"fmt"
	"net"
	"net/netip"
)

// OriginalDst needs Linux's netfilter; elsewhere it returns ErrUnsupported.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, fmt.Errorf("%w: not Linux", ErrUnsupported)
}
