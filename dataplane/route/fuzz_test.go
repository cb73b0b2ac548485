package route

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"minimesh/api"
	"minimesh/api/pathnorm"
	meshv1 "minimesh/proto/mesh/v1"
)

func fuzzRoutes() []*api.Route {
	return []*api.Route{
		mkRoute("10-exact", []*meshv1.RouteMatch{m(exact("/healthz"))}),
		mkRoute("20-api-get", []*meshv1.RouteMatch{m(prefix("/api/"), methods("GET", "HEAD"))}),
		mkRoute("21-canary", []*meshv1.RouteMatch{m(prefix("/api/"), hExact("X-Canary", "1")), m(hPrefix("X-Canary", "always"))}),
		mkRoute("30-regex", []*meshv1.RouteMatch{m(regex(`/users/[0-9]+(/.*)?`))}),
		mkRoute("40-tenant", []*meshv1.RouteMatch{m(hRegex("X-Tenant", `t-[a-z]{1,4}`), methods("POST"))}),
		mkRoute("50-absent", []*meshv1.RouteMatch{m(hPresent("X-Tenant", false), prefix("/t"))}),
		mkRoute("51-host", []*meshv1.RouteMatch{m(hPrefix("Host", "api."))}),
		mkRoute("60-unicode", []*meshv1.RouteMatch{m(prefix("/ü"))}),
	}
}

// refMatch is a plain reading of resources.proto, independent of Compile:
// routes by name, any match, every condition.
func refMatch(routes []*api.Route, req Request) string {
	sorted := slices.Clone(routes)
	slices.SortFunc(sorted, func(a, b *api.Route) int { return strings.Compare(a.Name, b.Name) })
	for _, r := range sorted {
		if len(r.Spec.Matches) == 0 {
			return r.Name
		}
		for _, rm := range r.Spec.Matches {
			if refMatchOne(rm, req) {
				return r.Name
			}
		}
	}
	return ""
}

func refMatchOne(rm *meshv1.RouteMatch, req Request) bool {
	if len(rm.Methods) > 0 && !slices.Contains(rm.Methods, req.Method) {
		return false
	}
	if p := rm.GetPath(); p != nil {
		switch {
		case p.GetRegex() != "":
			if !regexp.MustCompile("^(?:" + p.GetRegex() + ")$").MatchString(req.Path) {
				return false
			}
		case p.GetExact() != "":
			want, _ := pathnorm.Normalize(p.GetExact())
			if req.Path != want {
				return false
			}
		default:
			want, _ := pathnorm.Normalize(p.GetPrefix())
			if !strings.HasPrefix(req.Path, want) {
				return false
			}
		}
	}
	for _, h := range rm.Headers {
		var vals []string
		if strings.EqualFold(h.Name, "host") {
			if req.Host != "" {
				vals = []string{req.Host}
			}
		} else {
			vals = req.Header.Values(h.Name)
		}
		ok := false
		switch k := h.Match.(type) {
		case *meshv1.HeaderMatch_Present:
			ok = (len(vals) > 0) == k.Present
		case *meshv1.HeaderMatch_Exact:
			ok = slices.Contains(vals, k.Exact)
		case *meshv1.HeaderMatch_Prefix:
			ok = slices.ContainsFunc(vals, func(v string) bool { return strings.HasPrefix(v, k.Prefix) })
		case *meshv1.HeaderMatch_Regex:
			re := regexp.MustCompile("^(?:" + k.Regex + ")$")
			ok = slices.ContainsFunc(vals, re.MatchString)
		}
		if !ok {
			return false
		}
	}
	return true
}

func FuzzMatch(f *testing.F) {
	f.Add("GET", "/healthz", "", "", "")
	f.Add("GET", "/api/v1", "1", "", "")
	f.Add("POST", "/api/v1", "1", "", "api.prod")
	f.Add("POST", "/x", "", "t-abc", "")
	f.Add("GET", "/users/12/x", "always-on", "t-", "web")
	f.Add("GET", "/t/x", "", "", "")
	f.Add("GET", "/%C3%BC/x", "", "", "")
	routes := fuzzRoutes()
	tbl, err := Compile(Config{}, routes)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, path, canary, tenant, host string) {
		p, err := pathnorm.Normalize(path)
		if err != nil {
			return // answered 400 before routing
		}
		h := http.Header{}
		if canary != "" {
			h.Set("X-Canary", canary)
		}
		if tenant != "" {
			h.Set("X-Tenant", tenant)
		}
		req := Request{Method: method, Path: p, Host: host, Header: h}
		got := ""
		if r := tbl.Match(req); r != nil {
			got = r.Name
		}
		if want := refMatch(routes, req); got != want {
			t.Fatalf("Match(%+v) = %q, reference %q", req, got, want)
		}
	})
}
