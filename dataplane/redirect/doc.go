// Package redirect captures a pod's TCP traffic for mesh-proxy with
// iptables nat rules, and tells the proxy where a captured connection was
// going (OriginalDst, via SO_ORIGINAL_DST).
//
// It is `mesh-proxy redirect`, run by the pod's init container (which needs
// NET_ADMIN and NET_RAW, and iptables in the image) before the app starts:
//
//	PREROUTING -p tcp -> MESH_INBOUND:   the app's ports (or every port but
//	                                     the excluded) -> REDIRECT to the
//	                                     proxy's inbound port (15006)
//	OUTPUT     -p tcp -> MESH_OUTPUT:    loopback, the proxy's own user and
//	                                     excluded ports and CIDRs RETURN;
//	                                     the rest -> REDIRECT to the proxy's
//	                                     outbound port (when one is given)
//
// The proxy's user is what keeps its forwarded connections from being
// captured again and looping back into it, so the proxy must run as a
// user of its own (1337 by default) and never as root. kubelet's probes
// reach the pod from outside, so they would be captured too: the proxy's
// admin port, to which `meshctl inject` points them, is left out.
//
// Install is idempotent and atomic: one iptables-restore --noflush
// transaction flushes and refills our chains and adds each jump to them
// exactly once, so an init container that runs again changes nothing.
// Only IPv4 is programmed (iptables, not ip6tables): an IPv6 pod address
// is not captured.
//
// Usage:
//
//	r, err := redirect.New(redirect.Config{
//		ProxyUID:            1337,
//		CapturePorts:        []int{8080},
//		ExcludeInboundPorts: []int{15020},
//		OutboundPort:        15001,
//	})
//	if err != nil {
//		return err
//	}
//	return r.Install(ctx)
//
// and on the proxy's side, for a connection accepted on the outbound port:
//
//	dst, err := redirect.OriginalDst(conn) // e.g. 10.96.0.12:80
package redirect
