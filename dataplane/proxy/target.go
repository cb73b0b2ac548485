package proxy

import (
	"fmt"
	"strconv"
	"strings"

	meshv1 "minimesh/proto/mesh/v1"
)

// HeaderTarget tells the inbound which app port, and in what protocol, a
// request between two proxies is for: "<protocol>/<port>", for example
// "grpc/9090" or "tcp/5432". It is per request (per HTTP/2 stream), so the
// one connection between two proxies carries every port and protocol. The
// outbound sets it (removing any value the app sent); the inbound reads it,
// checks the port against the ports its own Service declares, and removes
// it, with every other X-Mesh-* header, before the app sees the request. A
// request without it is for the app's own address (--app), in HTTP/1.1.
const HeaderTarget = "X-Mesh-Target"

// HeaderRequestID identifies a request across proxies and apps: kept when
// the caller sent a valid one, generated otherwise.
const HeaderRequestID = "X-Request-Id"

// Target is the value of HeaderTarget: an app port and its protocol.
type Target struct {
	Protocol meshv1.Protocol
	Port     uint32
}

var protocolNames = map[meshv1.Protocol]string{
	meshv1.Protocol_PROTOCOL_HTTP:  "http",
	meshv1.Protocol_PROTOCOL_HTTP2: "http2",
	meshv1.Protocol_PROTOCOL_GRPC:  "grpc",
	meshv1.Protocol_PROTOCOL_TCP:   "tcp",
}

// String returns the header form, e.g. "grpc/9090".
func (t Target) String() string {
	return protocolNames[t.Protocol] + "/" + strconv.FormatUint(uint64(t.Port), 10)
}

// ParseTarget parses the value of HeaderTarget. Its errors wrap
// ErrInvalidTarget.
func ParseTarget(s string) (Target, error) {
	name, port, ok := strings.Cut(s, "/")
	if !ok {
		return Target{}, fmt.Errorf("%w: %q: want <protocol>/<port>", ErrInvalidTarget, s)
	}
	var t Target
	switch name {
	case "http":
		t.Protocol = meshv1.Protocol_PROTOCOL_HTTP
	case "http2":
		t.Protocol = meshv1.Protocol_PROTOCOL_HTTP2
	case "grpc":
		t.Protocol = meshv1.Protocol_PROTOCOL_GRPC
	case "tcp":
		t.Protocol = meshv1.Protocol_PROTOCOL_TCP
	default:
		return Target{}, fmt.Errorf("%w: %q: unknown protocol", ErrInvalidTarget, s)
	}
	p, ok := parsePort(port)
	if !ok {
		return Target{}, fmt.Errorf("%w: %q: port must be 1 to 65535", ErrInvalidTarget, s)
	}
	t.Port = p
	return t, nil
}

// parsePort parses a decimal port 1..65535 without signs, spaces or
// leading zeros, and without allocating.
func parsePort(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > 5 || s[0] == '0' {
		return 0, false
	}
	var n uint32
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint32(c-'0')
	}
	if n > 65535 {
		return 0, false
	}
	return n, true
}

// splitHost splits a Host header into a lower-case name without a trailing
// dot and its port (0 when absent or not a port). It allocates only when
// the name has upper-case letters.
func splitHost(host string) (name string, port uint32) {
	name = host
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		if p, ok := parsePort(host[i+1:]); ok {
			name, port = host[:i], p
		} else if i == len(host)-1 {
			name = host[:i] // "api:" is "api"
		}
	}
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return lowerASCII(name), port
		}
	}
	return name, port
}

// lowerASCII lower-cases ASCII letters only (host names are ASCII; other
// bytes are left as they are, never replaced).
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}
