package redirect

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and, at level
// SOL_IPV6, IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h).
const soOriginalDst = 80

// OriginalDst returns where a connection accepted from a REDIRECT rule was
// going before the rule rewrote its destination: the conntrack entry's
// original destination, via getsockopt(SO_ORIGINAL_DST). A connection
// that was not NATed reports its own local address (conntrack saw it but
// changed nothing) or ErrNotRedirected (conntrack has no entry), so callers
// must compare the result with c.LocalAddr() before trusting it.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w: %T has no file descriptor", ErrUnsupported, c)
	}
	tcp, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w: not a TCP connection", ErrUnsupported)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("redirect: original destination: %w", err)
	}
	v6 := !tcp.AddrPort().Addr().Unmap().Is4()
	var (
		dst  netip.AddrPort
		serr error
	)
	cerr := rc.Control(func(fd uintptr) {
		if v6 {
			var sa syscall.RawSockaddrInet6
			if serr = getsockopt(fd, syscall.SOL_IPV6, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); serr == nil {
				dst = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), netPort(&sa.Port))
			}
			return
		}
		// An IPv4 connection, also on a dual-stack socket: conntrack
		// holds an IPv4 tuple, which SOL_IP asks for.
		var sa syscall.RawSockaddrInet4
		if serr = getsockopt(fd, syscall.SOL_IP, unsafe.Pointer(&sa), unsafe.Sizeof(sa)); serr == nil {
			dst = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), netPort(&sa.Port))
		}
	})
	if cerr != nil {
		return netip.AddrPort{}, fmt.Errorf("redirect: original destination: %w", cerr)
	}
	if serr != nil {
		if errors.Is(serr, syscall.ENOENT) {
			return netip.AddrPort{}, fmt.Errorf("%w: %w", ErrNotRedirected, serr)
		}
		return netip.AddrPort{}, fmt.Errorf("redirect: getsockopt SO_ORIGINAL_DST: %w", serr)
	}
	return dst, nil
}

func getsockopt(fd uintptr, level int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst, uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// netPort reads a port stored in network byte order, on any host.
func netPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}
