package admin

// The guard every admin request passes, whatever its endpoint (later
// endpoints included):
//
//   - Host must name this server: an IP literal equal to the address the
//     connection arrived on, with its port (the kubelet's probes and a
//     Prometheus scrape send "podIP:port"), or for a connection on
//     loopback also "localhost" or a loopback IP, with any port (kubectl
//     port-forward maps ports). A DNS name an attacker controls, rebound to
//     the pod's or the operator's address, is refused: 421.
//   - A request that may change state (any method but GET and HEAD) needs
//     the header "X-Mesh-Admin: 1": a browser cannot send it cross-site
//     without a CORS preflight, which the admin port never grants (an
//     OPTIONS without the header is refused like any other): 403.
//
// Endpoints that show what the pod network should not see are further
// wrapped in LoopbackOnly. Every refusal is counted in
// minimesh_admin_refused_total{reason} and logged (at most once a second).

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HeaderName and HeaderValue are the header a state-changing admin request
// must carry.
const (
	HeaderName  = "X-Mesh-Admin"
	HeaderValue = "1"
)

// Refusal reasons, the label of minimesh_admin_refused_total.
const (
	RefusedHost     = "host"
	RefusedHeader   = "header"
	RefusedLoopback = "loopback"
)

type guard struct {
	listen  netip.AddrPort // the configured address, when no connection's is known
	name    string         // a host name in the configured address, if any
	refused *prometheus.CounterVec
	log     *slog.Logger
	lastLog atomic.Int64 // unix nanos of the last refusal logged
}

func newGuard(cfg Config) (*guard, error) {
	g := &guard{log: cfg.Logger}
	addr := cfg.Addr
	if cfg.Listener != nil {
		addr = cfg.Listener.Addr().String()
	}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ap, err := netip.ParseAddrPort(addr); err == nil {
			g.listen = ap
		} else if p, err := strconv.ParseUint(port, 10, 16); err == nil && host != "" {
			g.name = strings.ToLower(host)
			g.listen = netip.AddrPortFrom(netip.Addr{}, uint16(p))
		}
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minimesh_admin_refused_total",
		Help: "Admin port requests refused, by reason: host (Host names another server), header (a state-changing request without X-Mesh-Admin: 1), loopback (an endpoint served only to loopback clients).",
	}, []string{"reason"})
	if err := cfg.Registry.Register(refused); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		refused = are.ExistingCollector.(*prometheus.CounterVec)
	}
	for _, r := range []string{RefusedHost, RefusedHeader, RefusedLoopback} {
		refused.WithLabelValues(r)
	}
	g.refused = refused
	return g, nil
}

// wrap applies the guard before h.
func (g *guard) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r) {
			g.refuse(w, r, http.StatusMisdirectedRequest, RefusedHost, "admin: Host "+strconv.Quote(r.Host)+" does not name this server (use its IP address and port, or localhost)")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Header.Get(HeaderName) != HeaderValue {
			g.refuse(w, r, http.StatusForbidden, RefusedHeader, "admin: "+r.Method+" needs the header "+HeaderName+": "+HeaderValue)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (g *guard) refuse(w http.ResponseWriter, r *http.Request, code int, reason, msg string) {
	g.refused.WithLabelValues(reason).Inc()
	now := time.Now().UnixNano()
	if last := g.lastLog.Load(); now-last >= int64(time.Second) && g.lastLog.CompareAndSwap(last, now) {
		g.log.Warn("admin: request refused", slog.String("reason", reason), slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.String("host", r.Host), slog.String("remote", r.RemoteAddr))
	}
	writeText(w, code, msg+"\n")
}

// localAddr is the address the request's connection arrived on, or the
// configured one.
func (g *guard) localAddr(r *http.Request) netip.AddrPort {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
		}
	}
	return g.listen
}

func (g *guard) hostAllowed(r *http.Request) bool {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, ""
	}
	host = strings.TrimSuffix(strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")), ".")
	if host == "" {
		return false
	}
	var ip netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		ip = a.Unmap().WithZone("")
	}
	local := g.localAddr(r)
	if local.Addr().IsLoopback() || (!local.Addr().IsValid() && g.name == "localhost") {
		// kubectl port-forward and exec, the app in the pod: any port.
		return host == "localhost" || (ip.IsValid() && ip.IsLoopback())
	}
	if port != strconv.Itoa(int(local.Port())) {
		return false
	}
	if ip.IsValid() {
		return local.Addr().IsValid() && !local.Addr().IsUnspecified() && ip == local.Addr()
	}
	return g.name != "" && host == g.name
}

// LoopbackOnly serves h only to clients on loopback (the pod itself,
// kubectl port-forward and exec) and answers 403 to others, counted: for
// endpoints that show what the pod network should not see. The operator
// sees them through meshd (meshctl proxy-config, top, procz).
func (s *Server) LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil || !ap.Addr().Unmap().IsLoopback() {
			s.guard.refuse(w, r, http.StatusForbidden, RefusedLoopback, "admin: "+r.URL.Path+" is served only to loopback clients (kubectl port-forward or exec; meshctl through meshd)")
			return
		}
		h.ServeHTTP(w, r)
	})
}
