package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"minimesh/api"
	"minimesh/dataplane/accesslog"
	"minimesh/dataplane/external"
	"minimesh/dataplane/proxy"
)

// Outbound policies for Config.OutboundPolicy (--outbound-policy).
const (
	// OutboundAllowAny: captured non-HTTP traffic to destinations outside
	// the mesh passes through (the default).
	OutboundAllowAny = "allow-any"
	// OutboundRegistryOnly: it is refused, counted and logged unless an
	// ExternalService declares its address (Istio's REGISTRY_ONLY).
	OutboundRegistryOnly = "registry-only"
)

// ExternalListener is one --external NAME=ADDR: a local port for the
// ExternalService NAME of this proxy's namespace.
type ExternalListener struct {
	Name string
	Addr string
	// Listener, when set, is served instead of listening on Addr (tests).
	Listener net.Listener
}

// ParseExternal parses NAME=127.0.0.1:PORT: NAME a DNS label (an
// ExternalService's name), the address a loopback host:port.
func ParseExternal(s string) (ExternalListener, error) {
	name, addr, ok := strings.Cut(s, "=")
	if !ok {
		return ExternalListener{}, fmt.Errorf("--external %q: want NAME=127.0.0.1:PORT", s)
	}
	e := ExternalListener{Name: name, Addr: addr}
	return e, e.validate()
}

func (e ExternalListener) validate() error {
	if !api.IsLabel(e.Name) {
		return fmt.Errorf("--external %s=%s: NAME %q is not an ExternalService name (a DNS label: lower-case letters, digits and '-', at most 63)", e.Name, e.Addr, e.Name)
	}
	if e.Listener != nil {
		return nil
	}
	host, port, err := net.SplitHostPort(e.Addr)
	if err != nil || port == "" {
		return fmt.Errorf("--external %s=%s: address: want 127.0.0.1:PORT", e.Name, e.Addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--external %s=%s: %q is not a loopback address: the port would be open beyond the pod", e.Name, e.Addr, host)
	}
	return nil
}

// newExternal builds the ExternalServices part: the Set (a Part of the
// applier, the Host-routed port's External router, the transparent
// listener's registry), its client certificate reload task and a traffic
// listener per --external. It also checks --outbound-policy and warns once
// that --egress is deprecated.
func (s *Sidecar) newExternal(ns string, al *accesslog.Logger, m *proxy.Metrics) (*external.Set, error) {
	cfg := s.cfg
	switch cfg.OutboundPolicy {
	case "", OutboundAllowAny, OutboundRegistryOnly:
	default:
		return nil, fmt.Errorf("sidecar: --outbound-policy %q: want %s or %s", cfg.OutboundPolicy, OutboundAllowAny, OutboundRegistryOnly)
	}
	if cfg.OutboundPolicy == OutboundRegistryOnly && cfg.Transparent == "" && cfg.TransparentListener == nil {
		return nil, fmt.Errorf("sidecar: --outbound-policy %s applies to captured traffic: it needs --transparent", OutboundRegistryOnly)
	}
	log := cfg.Logger.With("component", "external")
	if len(cfg.Egress) > 0 {
		log.Warn("--egress is deprecated: declare an ExternalService (protocol http, or https to have the proxy originate TLS) instead; it supersedes --egress for the same host",
			slog.Any("egress", cfg.Egress))
	}
	set, err := external.New(external.Config{
		Namespace: ns, Outlier: cfg.Outlier, Observe: m.ExternalObserver(), AccessLog: al,
		Registerer: cfg.Registry, Clock: cfg.Clock, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	s.add("external", set.Run)
	seen := map[string]bool{}
	for _, e := range cfg.Externals {
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("sidecar: %w", err)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("sidecar: --external %s is given twice", e.Name)
		}
		seen[e.Name] = true
		s.addTraffic("external "+e.Name, func(ctx context.Context) error {
			ln := e.Listener
			if ln == nil {
				var err error
				if ln, err = net.Listen("tcp", e.Addr); err != nil {
					return fmt.Errorf("listen: %w", err)
				}
			}
			return set.Serve(ctx, ln, e.Name, external.ListenerLimits{Drain: cfg.Drain})
		}, e.Listener)
	}
	return set, nil
}

// externalStatus is the admin port's GET /external: the ExternalServices
// in force with their hosts' state, and each --external port with whether
// the config in force declares its name (a port whose name it lacks
// answers 502).
type externalStatus struct {
	Services  []external.ServiceStatus `json:"services"`
	Listeners []externalPort           `json:"listeners"`
}

type externalPort struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Declared bool   `json:"declared"`
}

func externalHandler(set *external.Set, ports []ExternalListener) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		st := externalStatus{Services: set.Status(), Listeners: []externalPort{}}
		for _, e := range ports {
			addr := e.Addr
			if e.Listener != nil {
				addr = e.Listener.Addr().String()
			}
			st.Listeners = append(st.Listeners, externalPort{Name: e.Name, Address: addr, Declared: set.Get(e.Name) != nil})
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
}
