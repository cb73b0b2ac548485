package route

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"time"

	"minimesh/api"
	"minimesh/api/pathnorm"
	"minimesh/certs"
	meshv1 "minimesh/proto/mesh/v1"
)

// Config holds what Compile needs besides the routes.
type Config struct {
	// Clock paces the retry budgets' per-second floor. Default
	// certs.SystemClock.
	Clock certs.Clock
	// Previous, if set, is the Table this one replaces: a route of the
	// same namespace and name whose budget settings are unchanged keeps
	// its retry Budget (balance and per-second floor), so a push neither
	// refills nor empties it. The new Table shares that Budget; neither
	// Table is modified.
	Previous *Table
}

// Request is what matching looks at.
type Request struct {
	Method string
	// Path is the request path normalized by pathnorm.Normalize, without
	// the query.
	Path string
	// Host is the request's Host (Go keeps it out of Header); a header
	// condition on "Host" reads it.
	Host string
	// Header holds the request's fields with canonical keys, as
	// net/http gives them.
	Header http.Header
}

// Table matches the requests to one service against its Routes. It is
// immutable and safe for concurrent use (its retry budgets count
// atomically); on a change compile a new one and swap it in. A nil *Table
// matches nothing.
type Table struct {
	service string
	routes  []*Route
	// readsHeader: a match reads a header field other than Host.
	readsHeader bool
}

// Route is one compiled Route resource: what a matching request gets.
type Route struct {
	// Namespace and Name of the Route resource; RateLimits name routes by
	// Name.
	Namespace, Name string
	// Backends share the matched requests by Weight.
	Backends []Backend
	// Timeout is the time for the whole request, retries included; 0: no
	// route timeout.
	Timeout time.Duration
	// Retry is never nil: a route without a retry policy has one with no
	// Attempts and no Budget, which retries nothing.
	Retry *RetryPolicy

	matches []match
	cum     []uint32 // cumulative weights
	total   uint32
}

// Backend is where a share of a route's requests go.
type Backend struct {
	// Service in the route's namespace, and optionally one of its subsets.
	Service, Subset string
	// Port of that service; 0: the port the request was addressed to if
	// that service has it, else its first port.
	Port uint32
	// Weight is relative; 0 gets no traffic.
	Weight uint32
}

type pathKind uint8

const (
	pathAny pathKind = iota
	pathExact
	pathPrefix
	pathRegex
)

type headerKind uint8

const (
	headerExact headerKind = iota
	headerPrefix
	headerRegex
	headerPresent
	headerAbsent
)

type match struct {
	pathKind pathKind
	path     string
	pathRe   *regexp.Regexp
	headers  []headerMatch
	methods  []string
}

type headerMatch struct {
	key   string // canonical
	host  bool   // the Host header: read Request.Host
	kind  headerKind
	value string
	re    *regexp.Regexp
}

// Compile builds the Table of one service from its Routes, each validated
// as meshd does at apply time. Routes are tried in order of their names
// (namespace, then name), as resources.proto says, and the first that
// matches wins: name them "10-api", "90-default" to order them. Within a
// Route, a request matches when it matches any of the route's matches (a
// route without matches takes every request); within a match, every
// condition set must hold. Exact and prefix paths are put in pathnorm's
// canonical form, as request paths are; a path no normalized request can
// have (one with "%2F" or ';') is an error.
func Compile(cfg Config, routes []*api.Route) (*Table, error) {
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	sorted := slices.Clone(routes)
	for _, r := range sorted {
		if r == nil {
			return nil, fmt.Errorf("%w: nil route", ErrInvalidRoute)
		}
	}
	slices.SortFunc(sorted, func(a, b *api.Route) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	t := &Table{}
	for _, r := range sorted {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidRoute, err)
		}
		if svc := r.Spec.GetService(); t.service == "" {
			t.service = svc
		} else if svc != t.service {
			return nil, fmt.Errorf("%w: %s is for %q, not %q", ErrMixedServices, api.KeyOf(r), svc, t.service)
		}
		cr, err := compileRoute(cfg, r)
		if err == nil {
			cr.Retry.Budget = cfg.Previous.keepBudget(cr)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidRoute, api.KeyOf(r), err)
		}
		t.routes = append(t.routes, cr)
		for _, m := range cr.matches {
			for _, h := range m.headers {
				t.readsHeader = t.readsHeader || !h.host
			}
		}
	}
	return t, nil
}

// ReadsHeader reports whether a match of t reads a header field other
// than Host (Request.Host): without one, Match needs no Request.Header.
func (t *Table) ReadsHeader() bool { return t != nil && t.readsHeader }

func compileRoute(cfg Config, r *api.Route) (*Route, error) {
	s := r.Spec
	cr := &Route{Namespace: r.Namespace, Name: r.Name, Timeout: s.GetTimeout().AsDuration()} // nil: 0
	for i, m := range s.GetMatches() {
		cm, err := compileMatch(m)
		if err != nil {
			return nil, fmt.Errorf("spec.matches[%d]: %w", i, err)
		}
		cr.matches = append(cr.matches, cm)
	}
	for _, b := range s.GetBackends() {
		w := api.BackendWeight(b)
		cr.Backends = append(cr.Backends, Backend{Service: b.GetService(), Subset: b.GetSubset(), Port: b.GetPort(), Weight: w})
		cr.total += w
		cr.cum = append(cr.cum, cr.total)
	}
	cr.Retry = &RetryPolicy{}
	if rp := s.GetRetries(); rp != nil {
		cr.Retry = compileRetry(cfg, rp)
	}
	return cr, nil
}

func compileMatch(m *meshv1.RouteMatch) (match, error) {
	var cm match
	switch k := m.GetPath().GetKind().(type) {
	case *meshv1.PathMatch_Exact:
		n, err := pathnorm.Normalize(k.Exact)
		if err != nil {
			return cm, fmt.Errorf("path.exact %q can never match a normalized request path: %w", k.Exact, err)
		}
		cm.pathKind, cm.path = pathExact, n
	case *meshv1.PathMatch_Prefix:
		n, err := pathnorm.Normalize(k.Prefix)
		if err != nil {
			return cm, fmt.Errorf("path.prefix %q can never match a normalized request path: %w", k.Prefix, err)
		}
		cm.pathKind, cm.path = pathPrefix, n
	case *meshv1.PathMatch_Regex:
		re, err := api.CompileRegex(k.Regex)
		if err != nil {
			return cm, fmt.Errorf("path.regex: %w", err)
		}
		cm.pathKind, cm.pathRe = pathRegex, re
	}
	for j, h := range m.GetHeaders() {
		hm := headerMatch{key: textproto.CanonicalMIMEHeaderKey(h.GetName())}
		hm.host = hm.key == "Host"
		switch k := h.GetMatch().(type) {
		case *meshv1.HeaderMatch_Exact:
			hm.kind, hm.value = headerExact, k.Exact
		case *meshv1.HeaderMatch_Prefix:
			hm.kind, hm.value = headerPrefix, k.Prefix
		case *meshv1.HeaderMatch_Regex:
			re, err := api.CompileRegex(k.Regex)
			if err != nil {
				return cm, fmt.Errorf("headers[%d].regex: %w", j, err)
			}
			hm.kind, hm.re = headerRegex, re
		case *meshv1.HeaderMatch_Present:
			hm.kind = headerAbsent
			if k.Present {
				hm.kind = headerPresent
			}
		}
		cm.headers = append(cm.headers, hm)
	}
	cm.methods = slices.Clone(m.GetMethods())
	return cm, nil
}

// Match returns the first Route (in name order) that the request matches,
// or nil: then the request goes to the service itself, with no timeout and
// no retries. Match does not allocate.
func (t *Table) Match(req Request) *Route {
	if t == nil {
		return nil
	}
	for _, r := range t.routes {
		if r.matchesRequest(&req) {
			return r
		}
	}
	return nil
}

// Routes returns the compiled routes in the order Match tries them.
func (t *Table) Routes() []*Route {
	if t == nil {
		return nil
	}
	return slices.Clone(t.routes)
}

// Service returns the service the routes are for ("" without routes).
func (t *Table) Service() string {
	if t == nil {
		return ""
	}
	return t.service
}

func (r *Route) matchesRequest(req *Request) bool {
	if len(r.matches) == 0 {
		return true
	}
	for i := range r.matches {
		if r.matches[i].matchesRequest(req) {
			return true
		}
	}
	return false
}

func (m *match) matchesRequest(req *Request) bool {
	if len(m.methods) > 0 && !slices.Contains(m.methods, req.Method) {
		return false
	}
	switch m.pathKind {
	case pathExact:
		if req.Path != m.path {
			return false
		}
	case pathPrefix:
		if !strings.HasPrefix(req.Path, m.path) {
			return false
		}
	case pathRegex:
		if !m.pathRe.MatchString(req.Path) {
			return false
		}
	}
	for i := range m.headers {
		if !m.headers[i].matchesRequest(req) {
			return false
		}
	}
	return true
}

// matchesRequest: a header with several values (or several fields)
// matches when any value does.
func (h *headerMatch) matchesRequest(req *Request) bool {
	var one [1]string
	vals := req.Header[h.key]
	if h.host {
		vals = nil
		if req.Host != "" {
			one[0] = req.Host
			vals = one[:]
		}
	}
	switch h.kind {
	case headerPresent:
		return len(vals) > 0
	case headerAbsent:
		return len(vals) == 0
	}
	for _, v := range vals {
		switch h.kind {
		case headerExact:
			if v == h.value {
				return true
			}
		case headerPrefix:
			if strings.HasPrefix(v, h.value) {
				return true
			}
		case headerRegex:
			if h.re.MatchString(v) {
				return true
			}
		}
	}
	return false
}

// PickBackend chooses a backend at random by weight (math/rand/v2's
// per-thread generator: cheap, no lock, no allocation).
func (r *Route) PickBackend() *Backend {
	return r.BackendAt(rand.Uint32N(r.total))
}

// BackendAt returns the backend that owns x in [0, TotalWeight()): the
// first backend takes [0, w0), the second [w0, w0+w1), and so on. x out
// of range is taken modulo TotalWeight.
func (r *Route) BackendAt(x uint32) *Backend {
	x %= r.total
	for i, c := range r.cum {
		if x < c {
			return &r.Backends[i]
		}
	}
	return &r.Backends[len(r.Backends)-1] // unreachable: x < total
}

// TotalWeight returns the sum of the backends' weights (never 0).
func (r *Route) TotalWeight() uint32 { return r.total }
