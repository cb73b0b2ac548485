package redirect

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"minimesh/api"
)

// The nat chains Install owns. It flushes and refills them on every run, so
// nothing else should add rules to them.
const (
	// ChainInbound is jumped to from PREROUTING: it picks the inbound TCP
	// connections to capture.
	ChainInbound = "MESH_INBOUND"
	// ChainInRedirect redirects to Config.InboundPort.
	ChainInRedirect = "MESH_IN_REDIRECT"
	// ChainOutput is jumped to from OUTPUT: it lets the proxy's own
	// traffic, loopback and excluded destinations pass and captures the rest.
	ChainOutput = "MESH_OUTPUT"
	// ChainRedirect redirects to Config.OutboundPort.
	ChainRedirect = "MESH_REDIRECT"
)

// Defaults of the port mesh-proxy receives captured inbound connections on
// and of the user it runs as: api's, which `meshctl inject` writes too.
const (
	DefaultInboundPort = api.ProxyInboundPort
	DefaultProxyUID    = api.ProxyUID
)

// jump is a rule in a built-in chain that sends TCP to one of ours.
type jump struct{ chain, rule string }

func (j jump) String() string { return "-A " + j.chain + " " + j.rule }

var (
	jumpInbound  = jump{"PREROUTING", "-p tcp -j " + ChainInbound}
	jumpOutbound = jump{"OUTPUT", "-p tcp -j " + ChainOutput}
)

// Config says which traffic of a pod's network namespace goes to the proxy.
// Only IPv4 (iptables) is programmed; see the package documentation.
type Config struct {
	// ProxyUID is the user mesh-proxy runs as. Its own connections are
	// never captured, which is what keeps the proxy's forwarded traffic
	// from looping back into it. Required, and not 0: root's traffic is
	// usually the app's.
	ProxyUID int
	// ProxyGID, when above 0, also lets processes of this group pass.
	ProxyGID int

	// InboundPort receives the captured inbound connections (default
	// 15006); the proxy must listen on it on the pod's address, since
	// REDIRECT in PREROUTING rewrites the destination to the address of
	// the interface the packet came in on.
	InboundPort int
	// CapturePorts are the app's inbound TCP ports to capture, or, with
	// CaptureAllInbound, every port but ExcludeInboundPorts (and the
	// proxy's own ports). Neither captures no inbound traffic.
	CapturePorts      []int
	CaptureAllInbound bool
	// ExcludeInboundPorts are never captured: the proxy's admin port,
	// which kubelet probes and Prometheus scrape, and any port that must
	// stay plain.
	ExcludeInboundPorts []int

	// OutboundPort receives the app's captured outbound connections, which
	// REDIRECT sends to 127.0.0.1:OutboundPort; 0 captures no outbound
	// traffic. The proxy finds where each was going with OriginalDst.
	OutboundPort int
	// ExcludeOutboundPorts and ExcludeOutboundCIDRs are destinations the
	// app reaches directly.
	ExcludeOutboundPorts []int
	ExcludeOutboundCIDRs []netip.Prefix

	// Iptables is the iptables command: "iptables" (default),
	// "iptables-legacy" or "iptables-nft". Its -save and -restore
	// companions are found by suffix.
	Iptables string
	// Timeout bounds each iptables run (default 30s).
	Timeout time.Duration
	Logger  *slog.Logger // discards if nil
}

func (c Config) withDefaults() Config {
	if c.InboundPort == 0 {
		c.InboundPort = DefaultInboundPort
	}
	if c.Iptables == "" {
		c.Iptables = "iptables"
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports whether the config can be installed.
func (c Config) Validate() error {
	c = c.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.ProxyUID <= 0 {
		return bad("proxy UID %d: must be the proxy's own non-root user, whose traffic is never captured", c.ProxyUID)
	}
	if c.ProxyGID < 0 {
		return bad("proxy GID %d is negative", c.ProxyGID)
	}
	port := func(what string, p int) error {
		if p < 1 || p > 65535 {
			return bad("%s %d: not a TCP port", what, p)
		}
		return nil
	}
	if err := port("inbound port", c.InboundPort); err != nil {
		return err
	}
	if c.OutboundPort != 0 {
		if err := port("outbound port", c.OutboundPort); err != nil {
			return err
		}
		if c.OutboundPort == c.InboundPort {
			return bad("inbound and outbound port are both %d", c.InboundPort)
		}
	}
	for _, p := range c.CapturePorts {
		if err := port("captured port", p); err != nil {
			return err
		}
		if p == c.InboundPort || p == c.OutboundPort {
			return bad("captured port %d is the proxy's own port", p)
		}
		if slices.Contains(c.ExcludeInboundPorts, p) {
			return bad("port %d is both captured and excluded", p)
		}
	}
	if c.CaptureAllInbound && len(c.CapturePorts) > 0 {
		return bad("capture all inbound ports or a list of them, not both")
	}
	for _, p := range c.ExcludeInboundPorts {
		if err := port("excluded inbound port", p); err != nil {
			return err
		}
	}
	for _, p := range c.ExcludeOutboundPorts {
		if err := port("excluded outbound port", p); err != nil {
			return err
		}
	}
	for _, p := range c.ExcludeOutboundCIDRs {
		if !p.IsValid() || !p.Addr().Is4() {
			return bad("excluded outbound CIDR %v: only IPv4 is redirected", p)
		}
	}
	if !c.CaptureAllInbound && len(c.CapturePorts) == 0 && c.OutboundPort == 0 {
		return bad("nothing to capture: give inbound ports to capture or an outbound port")
	}
	if strings.ContainsAny(c.Iptables, " \t\n") {
		return bad("iptables command %q: one program name or path, no arguments", c.Iptables)
	}
	return nil
}

// rules returns the rules of our chains in order, as iptables-restore lines.
func (c Config) rules() []string {
	var r []string
	add := func(format string, args ...any) { r = append(r, fmt.Sprintf(format, args...)) }
	inbound := c.CaptureAllInbound || len(c.CapturePorts) > 0
	if inbound {
		add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainInRedirect, c.InboundPort)
		if c.CaptureAllInbound {
			// The proxy's own ports first: a connection to them is meant
			// for the proxy as it is.
			skip := []int{c.InboundPort}
			if c.OutboundPort != 0 {
				skip = append(skip, c.OutboundPort)
			}
			for _, p := range sortedUnique(append(skip, c.ExcludeInboundPorts...)) {
				add("-A %s -p tcp --dport %d -j RETURN", ChainInbound, p)
			}
			add("-A %s -p tcp -j %s", ChainInbound, ChainInRedirect)
		} else {
			for _, p := range sortedUnique(c.CapturePorts) {
				add("-A %s -p tcp --dport %d -j %s", ChainInbound, p, ChainInRedirect)
			}
		}
	}
	if c.OutboundPort != 0 {
		add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainRedirect, c.OutboundPort)
		// Traffic that stays in the pod (127.0.0.1, or the pod's own
		// address, both routed over lo) is the app's business.
		add("-A %s -o lo -j RETURN", ChainOutput)
		// The proxy's own connections, including every one it forwards,
		// must pass: capturing them would send them back to the proxy.
		add("-A %s -m owner --uid-owner %d -j RETURN", ChainOutput, c.ProxyUID)
		if c.ProxyGID > 0 {
			add("-A %s -m owner --gid-owner %d -j RETURN", ChainOutput, c.ProxyGID)
		}
		for _, p := range sortedUnique(c.ExcludeOutboundPorts) {
			add("-A %s -p tcp --dport %d -j RETURN", ChainOutput, p)
		}
		cidrs := slices.Clone(c.ExcludeOutboundCIDRs)
		slices.SortFunc(cidrs, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
		for _, p := range slices.Compact(cidrs) {
			add("-A %s -d %s -j RETURN", ChainOutput, p.Masked())
		}
		add("-A %s -j %s", ChainOutput, ChainRedirect)
	}
	return r
}

// jumps are the rules in built-in chains this config wants present.
func (c Config) jumps() []jump {
	var j []jump
	if c.CaptureAllInbound || len(c.CapturePorts) > 0 {
		j = append(j, jumpInbound)
	}
	if c.OutboundPort != 0 {
		j = append(j, jumpOutbound)
	}
	return j
}

// script is the iptables-restore --noflush input that makes the nat table
// hold exactly this config's rules, given how many times each jump is
// present now: our chains are declared (which creates or flushes them),
// filled, missing jumps are added and duplicate or unwanted ones deleted,
// all in one transaction.
func (c Config) script(present map[jump]int) string {
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, ch := range []string{ChainInbound, ChainInRedirect, ChainOutput, ChainRedirect} {
		fmt.Fprintf(&b, ":%s - [0:0]\n", ch)
	}
	for _, r := range c.rules() {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	want := c.jumps()
	for _, j := range []jump{jumpInbound, jumpOutbound} {
		n := present[j]
		keep := 0
		if slices.Contains(want, j) {
			keep = 1
		}
		for ; n > keep; n-- {
			fmt.Fprintf(&b, "-D %s %s\n", j.chain, j.rule)
		}
		if n < keep {
			b.WriteString(j.String())
			b.WriteByte('\n')
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// countJumps counts our jumps in iptables-save output.
func countJumps(save string) map[jump]int {
	n := map[jump]int{}
	for line := range strings.Lines(save) {
		line = strings.TrimSpace(line)
		for _, j := range []jump{jumpInbound, jumpOutbound} {
			if line == j.String() {
				n[j]++
			}
		}
	}
	return n
}

// ParsePorts parses a comma-separated list of TCP ports ("8080,9090");
// an empty string is no port. "*" is not a port list: callers check for
// it first.
func ParsePorts(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var ports []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 || f != strconv.Itoa(p) {
			return nil, fmt.Errorf("%w: port %q: want a number from 1 to 65535", ErrInvalidConfig, f)
		}
		ports = append(ports, p)
	}
	return ports, nil
}

// ParseCIDRs parses a comma-separated list of IPv4 prefixes; a bare
// address is taken as /32.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("%w: CIDR %q: %w", ErrInvalidConfig, f, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("%w: CIDR %q: only IPv4 is redirected", ErrInvalidConfig, f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func sortedUnique(p []int) []int {
	p = slices.Clone(p)
	slices.Sort(p)
	return slices.Compact(p)
}
