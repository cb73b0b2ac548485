package route

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

func TestMatch(t *testing.T) {
	routes := []*api.Route{
		// Declared out of order: Compile orders by name.
		mkRoute("90-default", nil),
		mkRoute("10-exact", []*meshv1.RouteMatch{m(exact("/healthz"))}),
		mkRoute("20-api-get", []*meshv1.RouteMatch{m(prefix("/api/"), methods("GET", "HEAD"))}),
		mkRoute("21-api-canary", []*meshv1.RouteMatch{m(prefix("/api/"), hExact("X-Canary", "1"))}),
		mkRoute("30-regex", []*meshv1.RouteMatch{m(regex(`/users/[0-9]+`))}),
		mkRoute("40-any-of", []*meshv1.RouteMatch{m(exact("/a")), m(exact("/b"))}),
		mkRoute("50-header-prefix", []*meshv1.RouteMatch{m(hPrefix("user-agent", "curl/"))}),
		mkRoute("51-header-regex", []*meshv1.RouteMatch{m(hRegex("X-Tenant", `t-[a-z]+`))}),
		mkRoute("52-header-present", []*meshv1.RouteMatch{m(hPresent("X-Debug", true), exact("/debug"))}),
		mkRoute("53-header-absent", []*meshv1.RouteMatch{m(hPresent("Authorization", false), prefix("/private"))}),
		mkRoute("54-host", []*meshv1.RouteMatch{m(hExact("host", "api.prod"), prefix("/host"))}),
		mkRoute("60-all-conditions", []*meshv1.RouteMatch{m(prefix("/x"), methods("POST"), hExact("X-A", "1"), hExact("X-B", "2"))}),
		mkRoute("70-encoded", []*meshv1.RouteMatch{m(exact("/caf%c3%a9"))}),
		mkRoute("71-shadowed", []*meshv1.RouteMatch{m(exact("/healthz"))}),
	}
	tbl, err := Compile(Config{}, routes)
	if err != nil {
		t.Fatal(err)
	}
	h := func(kv ...string) http.Header {
		hdr := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			hdr.Add(kv[i], kv[i+1])
		}
		return hdr
	}
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"exact", Request{Method: "GET", Path: "/healthz"}, "10-exact"},
		{"exact shadows later route", Request{Method: "POST", Path: "/healthz"}, "10-exact"},
		{"exact is not prefix", Request{Method: "POST", Path: "/healthz/x"}, "90-default"},
		{"prefix with method", Request{Method: "GET", Path: "/api/v1"}, "20-api-get"},
		{"prefix other method falls through", Request{Method: "POST", Path: "/api/v1", Header: h("X-Canary", "1")}, "21-api-canary"},
		{"earlier route wins over a header match", Request{Method: "GET", Path: "/api/v1", Header: h("X-Canary", "1")}, "20-api-get"},
		{"header exact differs", Request{Method: "POST", Path: "/api/v1", Header: h("X-Canary", "2")}, "90-default"},
		{"header exact on a second value", Request{Method: "POST", Path: "/api/v1", Header: h("X-Canary", "0", "X-Canary", "1")}, "21-api-canary"},
		{"prefix needs its slash", Request{Method: "GET", Path: "/api"}, "90-default"},
		{"regex whole path", Request{Method: "GET", Path: "/users/42"}, "30-regex"},
		{"regex anchored", Request{Method: "GET", Path: "/users/42/x"}, "90-default"},
		{"regex anchored start", Request{Method: "GET", Path: "/v1/users/42"}, "90-default"},
		{"any of matches: first", Request{Method: "GET", Path: "/a"}, "40-any-of"},
		{"any of matches: second", Request{Method: "GET", Path: "/b"}, "40-any-of"},
		{"header prefix", Request{Method: "GET", Path: "/", Header: h("User-Agent", "curl/8.0")}, "50-header-prefix"},
		{"header prefix misses", Request{Method: "GET", Path: "/", Header: h("User-Agent", "Mozilla curl/8.0")}, "90-default"},
		{"header regex", Request{Method: "GET", Path: "/", Header: h("X-Tenant", "t-abc")}, "51-header-regex"},
		{"header regex anchored", Request{Method: "GET", Path: "/", Header: h("X-Tenant", "t-abc1")}, "90-default"},
		{"header present", Request{Method: "GET", Path: "/debug", Header: h("X-Debug", "")}, "52-header-present"},
		{"header not present", Request{Method: "GET", Path: "/debug"}, "90-default"},
		{"header absent", Request{Method: "GET", Path: "/private/x"}, "53-header-absent"},
		{"header absent but present", Request{Method: "GET", Path: "/private/x", Header: h("Authorization", "Bearer x")}, "90-default"},
		{"host header", Request{Method: "GET", Path: "/host", Host: "api.prod"}, "54-host"},
		{"host header differs", Request{Method: "GET", Path: "/host", Host: "api"}, "90-default"},
		{"host only from Host", Request{Method: "GET", Path: "/host", Header: h("Host", "api.prod")}, "90-default"},
		{"all conditions", Request{Method: "POST", Path: "/x", Header: h("X-A", "1", "X-B", "2")}, "60-all-conditions"},
		{"all conditions but one header", Request{Method: "POST", Path: "/x", Header: h("X-A", "1")}, "90-default"},
		{"all conditions but method", Request{Method: "PUT", Path: "/x", Header: h("X-A", "1", "X-B", "2")}, "90-default"},
		{"encoded literal normalized", Request{Method: "GET", Path: "/caf%C3%A9"}, "70-encoded"},
		{"method is case-sensitive", Request{Method: "get", Path: "/api/v1"}, "90-default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tbl.Match(tt.req)
			if r == nil || r.Name != tt.want {
				t.Fatalf("Match(%+v) = %v, want %s", tt.req, name(r), tt.want)
			}
		})
	}
}

func name(r *Route) string {
	if r == nil {
		return "<nil>"
	}
	return r.Name
}

func TestNoMatch(t *testing.T) {
	tbl, err := Compile(Config{}, []*api.Route{mkRoute("r", []*meshv1.RouteMatch{m(prefix("/api/"))})})
	if err != nil {
		t.Fatal(err)
	}
	if r := tbl.Match(Request{Method: "GET", Path: "/web"}); r != nil {
		t.Errorf("matched %s", r.Name)
	}
	var nilTable *Table
	if nilTable.Match(Request{Path: "/"}) != nil || nilTable.Routes() != nil || nilTable.Service() != "" {
		t.Error("nil table matched")
	}
	empty, err := Compile(Config{}, nil)
	if err != nil || empty.Match(Request{Path: "/"}) != nil {
		t.Errorf("empty table: %v", err)
	}
	if tbl.Service() != "api" || len(tbl.Routes()) != 1 {
		t.Errorf("Service %q, %d routes", tbl.Service(), len(tbl.Routes()))
	}
}

func TestCompiledValues(t *testing.T) {
	r := mkRoute("r", nil, backend("api", "", 90), backend("api", "canary", 10))
	r.Spec.Backends[0].Port = 8080
	r.Spec.Timeout = dur(2 * time.Second)
	r.Spec.Retries = &meshv1.RetryPolicy{
		Attempts: 3, PerTryTimeout: dur(500 * time.Millisecond),
		RetryOn:            []meshv1.RetryOn{meshv1.RetryOn_RETRY_ON_5XX, meshv1.RetryOn_RETRY_ON_RETRIABLE_4XX},
		RetryNonIdempotent: true, MaxBodyBytes: 1000,
		Budget: &meshv1.RetryBudget{Percent: 50, MinRetriesPerSecond: 0},
	}
	plain := mkRoute("plain", nil)
	defaults := mkRoute("defaults", nil)
	defaults.Spec.Retries = &meshv1.RetryPolicy{Attempts: 1}
	tbl, err := Compile(Config{}, []*api.Route{r, plain, defaults})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*Route{}
	for _, cr := range tbl.Routes() {
		got[cr.Name] = cr
	}
	cr := got["r"]
	if cr.Timeout != 2*time.Second || cr.Namespace != "prod" {
		t.Errorf("timeout %v namespace %q", cr.Timeout, cr.Namespace)
	}
	wantB := []Backend{{Service: "api", Port: 8080, Weight: 90}, {Service: "api", Subset: "canary", Weight: 10}}
	if len(cr.Backends) != 2 || cr.Backends[0] != wantB[0] || cr.Backends[1] != wantB[1] || cr.TotalWeight() != 100 {
		t.Errorf("backends %+v total %d", cr.Backends, cr.TotalWeight())
	}
	p := cr.Retry
	if p.Attempts != 3 || p.PerTryTimeout != 500*time.Millisecond || p.On != RetryOn5xx|RetryOnRetriable4xx || !p.NonIdempotent || p.MaxBodyBytes != 1000 {
		t.Errorf("retry %+v", p)
	}
	if p.Budget == nil || p.Budget.deposit != 500 || p.Budget.floor != nil {
		t.Errorf("budget %+v", p.Budget)
	}
	if pl := got["plain"]; pl.Timeout != 0 || pl.Retry == nil || pl.Retry.Attempts != 0 || pl.Retry.Budget != nil || pl.Backends[0].Weight != 1 {
		t.Errorf("plain: %+v", pl)
	} else {
		pl.Retry.Budget.Request() // nil-safe
		if pl.Retry.Retry(Attempt{Method: "GET", Failure: FailureConnect}) {
			t.Error("a route without a retry policy retried")
		}
	}
	d := got["defaults"].Retry
	if d.On != RetryOnConnectFailure|RetryOnReset|RetryOnGatewayError || d.MaxBodyBytes != api.DefaultRetryBodyBytes || d.PerTryTimeout != 0 || d.NonIdempotent {
		t.Errorf("defaults: %+v", d)
	}
	if d.Budget.deposit != 200 || d.Budget.floor == nil || d.Budget.floor.Limit() != api.DefaultMinRetriesPerSecond {
		t.Errorf("default budget: %+v", d.Budget)
	}
}

func TestCompileErrors(t *testing.T) {
	other := mkRoute("o", nil)
	other.Spec.Service = "web"
	noBackends := mkRoute("nb", nil)
	noBackends.Spec.Backends = nil
	tests := []struct {
		name   string
		routes []*api.Route
		err    error
		text   string
	}{
		{"nil", []*api.Route{nil}, ErrInvalidRoute, "nil route"},
		{"no backends", []*api.Route{noBackends}, api.ErrInvalid, "spec.backends"},
		{"bad regex", []*api.Route{mkRoute("r", []*meshv1.RouteMatch{m(regex("a("))})}, api.ErrInvalid, "regex"},
		{"encoded slash", []*api.Route{mkRoute("r", []*meshv1.RouteMatch{m(prefix("/a%2Fb"))})}, ErrInvalidRoute, "can never match"},
		{"path parameter", []*api.Route{mkRoute("r", []*meshv1.RouteMatch{m(exact("/a"), methods("GET")), m(exact("/a;b"))})}, ErrInvalidRoute, "spec.matches[1]: path.exact"},
		{"mixed services", []*api.Route{mkRoute("r", nil), other}, ErrMixedServices, `"web"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tbl, err := Compile(Config{}, tt.routes)
			if !errors.Is(err, tt.err) || tbl != nil {
				t.Fatalf("Compile = %v, %v; want %v", tbl, err, tt.err)
			}
			if !errors.Is(err, ErrInvalidRoute) && !errors.Is(err, ErrMixedServices) {
				t.Errorf("%v wraps no sentinel of this package", err)
			}
			if !strings.HasPrefix(err.Error(), "route: ") || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q: want prefix route: and %q", err, tt.text)
			}
		})
	}
}

func TestBackendAt(t *testing.T) {
	tbl, err := Compile(Config{}, []*api.Route{mkRoute("r", nil,
		backend("a", "", 3), backend("b", "", 0), backend("c", "", 5), backend("d", "", 2))})
	if err != nil {
		t.Fatal(err)
	}
	r := tbl.Routes()[0]
	counts := map[string]int{}
	for x := range r.TotalWeight() {
		counts[r.BackendAt(x).Service]++
	}
	if counts["a"] != 3 || counts["b"] != 0 || counts["c"] != 5 || counts["d"] != 2 {
		t.Errorf("shares %v, want a:3 c:5 d:2", counts)
	}
	if r.BackendAt(0).Service != "a" || r.BackendAt(3).Service != "c" || r.BackendAt(9).Service != "d" || r.BackendAt(10).Service != "a" {
		t.Error("BackendAt boundaries")
	}
}

func TestPickBackendSplit(t *testing.T) {
	tbl, err := Compile(Config{}, []*api.Route{mkRoute("r", nil,
		backend("stable", "", 90), backend("canary", "", 10), backend("drained", "", 0))})
	if err != nil {
		t.Fatal(err)
	}
	r := tbl.Routes()[0]
	const n = 20000
	counts := map[string]int{}
	for range n {
		counts[r.PickBackend().Service]++
	}
	// 10 % of 20000 is 2000 ± 42 (one standard deviation); allow ± 500.
	if c := counts["canary"]; c < 1500 || c > 2500 {
		t.Errorf("canary got %d of %d", c, n)
	}
	if counts["drained"] != 0 || counts["stable"]+counts["canary"] != n {
		t.Errorf("counts %v", counts)
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	tbl := benchTable(t)
	for _, req := range benchRequests() {
		if n := testing.AllocsPerRun(100, func() { tbl.Match(req) }); n != 0 {
			t.Errorf("Match(%s %s): %v allocations", req.Method, req.Path, n)
		}
	}
	r := tbl.Routes()[0]
	if n := testing.AllocsPerRun(100, func() { r.PickBackend() }); n != 0 {
		t.Errorf("PickBackend: %v allocations", n)
	}
}

func benchTable(tb testing.TB) *Table {
	tb.Helper()
	var routes []*api.Route
	for _, p := range []string{"/a/", "/b/", "/c/", "/d/", "/e/", "/f/", "/g/", "/h/"} {
		routes = append(routes, mkRoute("1"+p[1:2], []*meshv1.RouteMatch{m(prefix(p), methods("GET", "POST"))}))
	}
	routes = append(routes,
		mkRoute("2-header", []*meshv1.RouteMatch{m(prefix("/api/"), hExact("X-Canary", "1"))}, backend("api", "canary", 1)),
		mkRoute("3-regex", []*meshv1.RouteMatch{m(regex(`/api/v[0-9]+/users/[0-9]+`))}),
		mkRoute("9-default", nil, backend("api", "", 95), backend("api", "canary", 5)))
	tbl, err := Compile(Config{}, routes)
	if err != nil {
		tb.Fatal(err)
	}
	return tbl
}

func benchRequests() []Request {
	return []Request{
		{Method: "GET", Path: "/a/x"},
		{Method: "GET", Path: "/api/v1/users/42", Header: http.Header{"X-Canary": {"1"}}},
		{Method: "GET", Path: "/api/v1/users/42", Header: http.Header{"User-Agent": {"curl"}}},
		{Method: "DELETE", Path: "/zzz"},
	}
}

// ReadsHeader says whether Match needs a request's header map: a match on
// a field other than Host.
func TestReadsHeader(t *testing.T) {
	for _, tc := range []struct {
		name  string
		match *meshv1.RouteMatch
		want  bool
	}{
		{"path only", m(prefix("/api/")), false},
		{"Host only", m(hExact("host", "api")), false},
		{"a field", m(prefix("/"), hExact("x-canary", "yes")), true},
	} {
		tbl, err := Compile(Config{}, []*api.Route{mkRoute("r", []*meshv1.RouteMatch{m(exact("/x")), tc.match})})
		if err != nil {
			t.Fatal(err)
		}
		if got := tbl.ReadsHeader(); got != tc.want {
			t.Errorf("%s: ReadsHeader %v, want %v", tc.name, got, tc.want)
		}
	}
	var nilTable *Table
	if nilTable.ReadsHeader() {
		t.Error("a nil table reads headers")
	}
}
