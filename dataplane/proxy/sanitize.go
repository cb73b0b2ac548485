package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"

	"minimesh/dataplane/applink"
)

// What the app receives. Both app-facing listeners (the inbound and the
// public port) run every request through sanitize before anything else
// looks at it (target, path normalization, authorization, routing), so the
// policy decides on the request the app gets and not on another reading
// of it:
//
//   - The method must be a token without a lower-case letter (nginx's
//     rule): authorization compares methods exactly, as Istio's `methods`
//     does (a rule naming GET does not cover HEAD, nor "get"), and a
//     policy can only name upper-case methods, while Flask, Django and
//     other WSGI/Rack stacks upper-case the method they are given: "delete"
//     would slip past `deny methods: [DELETE]` and be served as DELETE.
//     HTTP/1.1 methods and Hosts are checked by net/http's server; an
//     HTTP/2 :method and :authority are not, so the token rule and
//     httpguts.ValidHostHeader (what net/http's Transport requires) are
//     applied here to every request: a :method holding a space would
//     otherwise write a request line of five fields to the app.
//   - A request header (or declared trailer) whose name holds "_" is
//     dropped (nginx's default, Envoy's headers_with_underscores_action:
//     DROP_HEADER): CGI, WSGI and Rack turn "-" and "_" alike into "_"
//     (HTTP_X_MESH_PEER_ID), so X_Mesh_Peer_Id would reach such an app as
//     the header the proxy vouches for.
//   - The routing overrides X-Original-URL, X-Rewrite-URL,
//     X-HTTP-Method-Override, X-HTTP-Method and X-Method-Override are
//     dropped: frameworks route by them (Symfony, IIS, Rails and Express
//     middleware), on a path or method the policy never saw.
//   - Upgrade keeps only the token "websocket" (Envoy's default set of
//     upgrades): after an app's 101 to "h2c", say, the connection is a
//     tunnel to the app in which no request is seen by the policy. When no
//     token is left, Upgrade goes and "upgrade" leaves Connection: the
//     request is forwarded as a plain one.
//   - Headers in which a TLS terminator states a client certificate
//     (X-SSL-Client-*, X-Client-Cert…, clientCertHeader) are dropped at
//     both listeners: the proxy states the caller's identity in
//     X-Mesh-Peer-Id only.
//   - At the public port only, every header a client could use to claim
//     an address, host or scheme (Forwarded, X-Forwarded-*, X-Real-IP,
//     True-Client-IP and kin, clientAddressHeader) is dropped; the proxy
//     then sets X-Forwarded-For, -Host and -Proto itself. At the inbound a
//     meshed caller is authenticated: its forwarding headers pass as sent
//     (its app may be a gateway stating its own client), as Istio's
//     sidecars pass them (Envoy's use_remote_address off). The caller's
//     identity, not an address, is what the app may trust: X-Mesh-Peer-Id.
//
// Dropped headers are counted in
// minimesh_proxy_headers_dropped_total{listener,reason}.

// Reasons of minimesh_proxy_headers_dropped_total.
const (
	dropUnderscore = "underscore" // a name holding "_"
	dropOverride   = "override"   // X-HTTP-Method-Override and kin
	dropUpgrade    = "upgrade"    // an Upgrade token other than websocket
)

func newHeadersDropped(r *registrar) *prometheus.CounterVec {
	return r.counterVec(prometheus.CounterOpts{
		Namespace: "minimesh", Subsystem: "proxy", Name: "headers_dropped_total",
		Help: "Request headers removed before the app, by listener and reason: underscore (a name with '_', which CGI/WSGI apps read as its '-' spelling), override (X-HTTP-Method-Override, X-Original-URL and kin), upgrade (an Upgrade token other than websocket).",
	}, []string{"listener", "reason"})
}

// sanitizer applies the rules above to the requests of one listener.
type sanitizer struct {
	public                        bool
	underscore, override, upgrade prometheus.Counter
}

func newSanitizer(m *Metrics, listener string) *sanitizer {
	return &sanitizer{
		public:     listener == ListenerPublic,
		underscore: m.headersDropped.WithLabelValues(listener, dropUnderscore),
		override:   m.headersDropped.WithLabelValues(listener, dropOverride),
		upgrade:    m.headersDropped.WithLabelValues(listener, dropUpgrade),
	}
}

var (
	errMethodCase  = errors.New("proxy: method with a lower-case letter (methods are matched as sent, and apps upper-case them)")
	errMethodToken = errors.New("proxy: method is not an HTTP token")
	errHost        = errors.New("proxy: Host (or :authority) is not a valid host")
)

// sanitize checks r's method and Host (an error: answer 400) and removes
// from r.Header what the app must not receive. It allocates nothing for a
// request that carries none of it.
func (s *sanitizer) sanitize(r *http.Request) error {
	if err := checkMethod(r.Method); err != nil {
		return err
	}
	if !httpguts.ValidHostHeader(r.Host) {
		return fmt.Errorf("%w: %q", errHost, r.Host)
	}
	h := r.Header
	for k := range h {
		switch {
		case strings.IndexByte(k, '_') >= 0:
			delete(h, k)
			s.underscore.Inc()
		case isRoutingOverride(k):
			delete(h, k)
			s.override.Inc()
		case clientCertHeader(k), s.public && clientAddressHeader(k):
			delete(h, k)
		}
	}
	// Request trailers the client declared: the same names go, and mesh
	// ones (the app gets the fields its Trailer header announces).
	for k := range r.Trailer {
		switch {
		case strings.IndexByte(k, '_') >= 0:
			delete(r.Trailer, k)
			s.underscore.Inc()
		case isRoutingOverride(k):
			delete(r.Trailer, k)
			s.override.Inc()
		case applink.HasPrefixFold(k, "X-Mesh-") || strings.EqualFold(k, "X-Forwarded-Client-Cert") ||
			clientCertHeader(k) || s.public && clientAddressHeader(k):
			delete(r.Trailer, k)
		}
	}
	if up, ok := h["Upgrade"]; ok && !onlyWebSocket(up) {
		s.upgrade.Inc()
		if applink.ListedIn(up, "websocket") {
			h["Upgrade"] = []string{"websocket"}
		} else {
			delete(h, "Upgrade")
			if conn, ok := h["Connection"]; ok {
				if rest := withoutToken(conn, "upgrade"); rest != nil {
					h["Connection"] = rest
				} else {
					delete(h, "Connection")
				}
			}
		}
	}
	return nil
}

// checkMethod accepts a method that is an HTTP token with no lower-case
// letter.
func checkMethod(m string) error {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return nil
	}
	if m == "" {
		return errMethodToken
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if 'a' <= c && c <= 'z' {
			return fmt.Errorf("%w: %q", errMethodCase, m)
		}
		if c >= 0x80 || !httpguts.IsTokenRune(rune(c)) {
			return fmt.Errorf("%w: %q", errMethodToken, m)
		}
	}
	return nil
}

// isRoutingOverride reports whether k is a header frameworks let override
// the request's path or method.
func isRoutingOverride(k string) bool {
	switch len(k) {
	case 13:
		return strings.EqualFold(k, "X-Rewrite-Url") || strings.EqualFold(k, "X-Http-Method")
	case 14:
		return strings.EqualFold(k, "X-Original-Url")
	case 17:
		return strings.EqualFold(k, "X-Method-Override")
	case 22:
		return strings.EqualFold(k, "X-Http-Method-Override")
	}
	return false
}

// clientAddressHeader reports whether k is a header apps read as the
// client's address, host or scheme as a proxy in front of them saw it:
// Forwarded, every X-Forwarded-* (For, Host, Proto, Port, Prefix, Server,
// Ssl, Scheme, Uri…), X-Real-IP and the CDN and load-balancer spellings of
// the client's IP.
func clientAddressHeader(k string) bool {
	if applink.HasPrefixFold(k, "X-Forwarded-") {
		return true
	}
	switch len(k) {
	case 9:
		return strings.EqualFold(k, "Forwarded") || strings.EqualFold(k, "X-Real-Ip") || strings.EqualFold(k, "Client-Ip")
	case 11:
		return strings.EqualFold(k, "X-Client-Ip") || strings.EqualFold(k, "X-Remote-Ip")
	case 13:
		return strings.EqualFold(k, "X-Remote-Addr")
	case 14:
		return strings.EqualFold(k, "True-Client-Ip")
	case 16:
		return strings.EqualFold(k, "Cf-Connecting-Ip") || strings.EqualFold(k, "Fastly-Client-Ip") || strings.EqualFold(k, "X-Originating-Ip")
	case 19:
		return strings.EqualFold(k, "X-Cluster-Client-Ip")
	case 24:
		return strings.EqualFold(k, "X-Original-Forwarded-For")
	}
	return false
}

// clientCertHeader reports whether k is a header in which a TLS
// terminator in front of an app states the client's certificate or its
// verification (nginx's and Apache's X-SSL-Client-*, Ssl-Client-*, AWS
// ALB's X-Amzn-Mtls-*, IIS ARR's X-Arr-ClientCert, X-Client-Cert and
// X-Client-Verify): the proxy is the app's TLS terminator and states the
// caller's identity in X-Mesh-Peer-Id only, so any other such header is a
// forgery, from a meshed caller as from an outside client.
// (X-Forwarded-Client-Cert goes with the mesh headers.)
func clientCertHeader(k string) bool {
	return applink.HasPrefixFold(k, "X-Ssl-Client") || applink.HasPrefixFold(k, "Ssl-Client") ||
		applink.HasPrefixFold(k, "X-Amzn-Mtls-") || applink.HasPrefixFold(k, "X-Client-Cert") ||
		applink.HasPrefixFold(k, "X-Client-Verify") || applink.HasPrefixFold(k, "X-Arr-Clientcert")
}

// onlyWebSocket reports whether the Upgrade values vv are the one token
// "websocket".
func onlyWebSocket(vv []string) bool {
	return len(vv) == 1 && strings.EqualFold(strings.TrimSpace(vv[0]), "websocket")
}

// withoutToken returns the comma-separated values vv without tok, as one
// field (nil when nothing is left).
func withoutToken(vv []string, tok string) []string {
	var keep []string
	for _, f := range vv {
		for f != "" {
			var t string
			t, f, _ = strings.Cut(f, ",")
			if t = strings.TrimSpace(t); t != "" && !strings.EqualFold(t, tok) {
				keep = append(keep, t)
			}
		}
	}
	if len(keep) == 0 {
		return nil
	}
	return []string{strings.Join(keep, ", ")}
}
