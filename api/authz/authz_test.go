package authz

import (
	"errors"
	"strings"
	"testing"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// want is the part of a Decision a case checks; ref fields are "policy#rule".
type want struct {
	allowed bool
	action  Action
	rule    string // "" when a default decided
	reason  string
	dryRun  string // "" no dry-run report; "default" or "policy#rule"
	audit   string
}

func ref(policy string, rule int) string {
	if rule < 0 {
		return ""
	}
	return policy + "#" + itoa(rule)
}

func itoa(i int) string { return string(rune('0' + i)) }

func TestCheck(t *testing.T) {
	type tc struct {
		name     string
		policies []*api.AuthorizationPolicy
		req      Request
		want     want
	}
	get := func(peer, path string) Request { return Request{Peer: peer, Method: "GET", Path: path} }
	tests := []tc{
		{"no policies allow", nil, get(web, "/"), want{allowed: true, reason: ReasonNoPolicies}},

		// DENY alone.
		{"deny matches", []*api.AuthorizationPolicy{policy("d", false, deny(prefix("/admin")))},
			get(web, "/admin/x"), want{action: ActionDeny, rule: "prod/d#0", reason: ReasonDenyRule}},
		{"deny misses: default allow without allow rules", []*api.AuthorizationPolicy{policy("d", false, deny(prefix("/admin")))},
			get(web, "/api"), want{allowed: true, reason: ReasonNoAllowRules}},

		// ALLOW alone.
		{"allow matches", []*api.AuthorizationPolicy{policy("a", false, allow(from(web)))},
			get(web, "/"), want{allowed: true, action: ActionAllow, rule: "prod/a#0", reason: ReasonAllowRule}},
		{"allow misses: default deny", []*api.AuthorizationPolicy{policy("a", false, allow(from(web)))},
			get(batch, "/"), want{reason: ReasonNoAllowMatch}},
		{"second allow rule matches", []*api.AuthorizationPolicy{policy("a", false, allow(from(web)), allow(from(batch)))},
			get(batch, "/"), want{allowed: true, action: ActionAllow, rule: "prod/a#1", reason: ReasonAllowRule}},

		// DENY before ALLOW, whatever the order of rules and policies.
		{"deny before allow in one policy", []*api.AuthorizationPolicy{policy("p", false, allow(from(web)), deny(prefix("/admin")))},
			get(web, "/admin"), want{action: ActionDeny, rule: "prod/p#1", reason: ReasonDenyRule}},
		{"deny before allow across policies", []*api.AuthorizationPolicy{
			policy("a-allow", false, allow()), policy("z-deny", false, deny(methods("DELETE")))},
			Request{Peer: web, Method: "DELETE", Path: "/"}, want{action: ActionDeny, rule: "prod/z-deny#0", reason: ReasonDenyRule}},
		{"allow when the deny misses", []*api.AuthorizationPolicy{
			policy("a-allow", false, allow()), policy("z-deny", false, deny(methods("DELETE")))},
			get(web, "/"), want{allowed: true, action: ActionAllow, rule: "prod/a-allow#0", reason: ReasonAllowRule}},
		{"first deny in name order reported", []*api.AuthorizationPolicy{
			policy("b", false, deny(from(web))), policy("a", false, deny(prefix("/")))},
			get(web, "/"), want{action: ActionDeny, rule: "prod/a#0", reason: ReasonDenyRule}},

		// AUDIT decides nothing but is reported.
		{"audit only", []*api.AuthorizationPolicy{policy("au", false, audit(prefix("/admin")))},
			get(web, "/admin"), want{allowed: true, reason: ReasonNoAllowRules, audit: "prod/au#0"}},
		{"audit misses", []*api.AuthorizationPolicy{policy("au", false, audit(prefix("/admin")))},
			get(web, "/api"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"audit with deny", []*api.AuthorizationPolicy{policy("p", false, audit(), deny(from(batch)))},
			get(batch, "/"), want{action: ActionDeny, rule: "prod/p#1", reason: ReasonDenyRule, audit: "prod/p#0"}},
		{"audit with default deny", []*api.AuthorizationPolicy{policy("p", false, audit(), allow(from(web)))},
			get(batch, "/"), want{reason: ReasonNoAllowMatch, audit: "prod/p#0"}},
		{"audit is no allow rule", []*api.AuthorizationPolicy{policy("p", false, audit(from(web)))},
			get(batch, "/"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"audit in a dry-run policy is reported", []*api.AuthorizationPolicy{policy("p", true, audit())},
			get(batch, "/"), want{allowed: true, reason: ReasonNoAllowRules, audit: "prod/p#0"}},

		// Dry-run computes but never decides.
		{"dry-run deny does not deny", []*api.AuthorizationPolicy{policy("dry", true, deny(prefix("/admin")))},
			get(web, "/admin"), want{allowed: true, reason: ReasonNoAllowRules, dryRun: "prod/dry#0"}},
		{"dry-run deny misses", []*api.AuthorizationPolicy{policy("dry", true, deny(prefix("/admin")))},
			get(web, "/api"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"dry-run allow misses: would deny by default", []*api.AuthorizationPolicy{policy("dry", true, allow(from(web)))},
			get(batch, "/"), want{allowed: true, reason: ReasonNoAllowRules, dryRun: "default"}},
		{"dry-run allow matches", []*api.AuthorizationPolicy{policy("dry", true, allow(from(web)))},
			get(web, "/"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"dry-run allow never allows", []*api.AuthorizationPolicy{
			policy("a", false, allow(from(web))), policy("dry", true, allow(from(batch)))},
			get(batch, "/"), want{reason: ReasonNoAllowMatch}},
		{"dry-run deny with enforced allow", []*api.AuthorizationPolicy{
			policy("a", false, allow(from(web))), policy("dry", true, deny(methods("POST")))},
			Request{Peer: web, Method: "POST", Path: "/"}, want{allowed: true, action: ActionAllow, rule: "prod/a#0", reason: ReasonAllowRule, dryRun: "prod/dry#0"}},
		{"enforced allow satisfies the dry-run's allow rules", []*api.AuthorizationPolicy{
			policy("a", false, allow(from(web))), policy("dry", true, allow(from(batch)))},
			get(web, "/"), want{allowed: true, action: ActionAllow, rule: "prod/a#0", reason: ReasonAllowRule}},
		{"enforced deny wins, no dry-run report", []*api.AuthorizationPolicy{
			policy("d", false, deny(from(web))), policy("dry", true, deny(from(web)))},
			get(web, "/"), want{action: ActionDeny, rule: "prod/d#0", reason: ReasonDenyRule}},
		{"dry-run policy keeps enforced default deny", []*api.AuthorizationPolicy{
			policy("a", false, allow(from(web))), policy("dry", true, deny(from(batch)))},
			get(batch, "/"), want{reason: ReasonNoAllowMatch}},

		// Paths.
		{"exact matches", []*api.AuthorizationPolicy{policy("p", false, deny(exact("/admin")))},
			get(web, "/admin"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"exact is not a prefix", []*api.AuthorizationPolicy{policy("p", false, deny(exact("/admin")))},
			get(web, "/admin/"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"exact is case-sensitive", []*api.AuthorizationPolicy{policy("p", false, deny(exact("/admin")))},
			get(web, "/Admin"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"exact case-insensitive", []*api.AuthorizationPolicy{policy("p", false, deny(exact("/admin"), fold()))},
			get(web, "/ADMIN"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"prefix is a string prefix", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/admin")))},
			get(web, "/administrator"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"prefix with slash", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/admin/")))},
			get(web, "/admin"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"prefix shorter path", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/admin")))},
			get(web, "/adm"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"prefix is case-sensitive", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/admin")))},
			get(web, "/ADMIN/x"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"prefix case-insensitive", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/Admin"), fold()))},
			get(web, "/aDMIN/x"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"case-insensitive folds only ASCII letters", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/a-b"), fold()))},
			get(web, "/A_b"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"case-insensitive: dotted capital I lower-cases to i", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/admin"), fold()))},
			get(web, "/adm%C4%B0n"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"case-insensitive: dotless i upper-cases to I", []*api.AuthorizationPolicy{policy("p", false, deny(exact("/ADMIN"), fold()))},
			get(web, "/adm%C4%B1n"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"case-insensitive: Kelvin sign folds to k", []*api.AuthorizationPolicy{policy("p", false, deny(exact("/key"), fold()))},
			get(web, "/%E2%84%AAey"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"case-insensitive exact: nothing after", []*api.AuthorizationPolicy{policy("p", false, deny(exact("/key"), fold()))},
			get(web, "/%E2%84%AAeys"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"case-insensitive: other letters do not fold", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/admin"), fold()))},
			get(web, "/%C3%A4dmin"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"case-insensitive: encoded bytes compared", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/café"), fold()))},
			get(web, "/CAF%C3%A9"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"case-sensitive: dotted capital I is not i", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/admin")))},
			get(web, "/adm%C4%B0n"), want{allowed: true, reason: ReasonNoAllowRules}},
		{"rule path normalized like requests", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/café")))},
			get(web, "/caf%C3%A9/menu"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"rule path encoded lower-case", []*api.AuthorizationPolicy{policy("p", false, deny(exact("/%61dmin")))},
			get(web, "/admin"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"any of the paths", []*api.AuthorizationPolicy{policy("p", false, allow(exact("/a"), prefix("/b/")))},
			get(web, "/b/c"), want{allowed: true, action: ActionAllow, rule: "prod/p#0", reason: ReasonAllowRule}},
		{"none of the paths", []*api.AuthorizationPolicy{policy("p", false, allow(exact("/a"), prefix("/b/")))},
			get(web, "/c"), want{reason: ReasonNoAllowMatch}},

		// Identities.
		{"identity exact", []*api.AuthorizationPolicy{policy("p", false, allow(from(web)))},
			get(webDev, "/"), want{reason: ReasonNoAllowMatch}},
		{"identity glob segment", []*api.AuthorizationPolicy{policy("p", false, allow(from("spiffe://minimesh.local/ns/*/sa/web")))},
			get(webDev, "/"), want{allowed: true, action: ActionAllow, rule: "prod/p#0", reason: ReasonAllowRule}},
		{"identity glob misses other sa", []*api.AuthorizationPolicy{policy("p", false, allow(from("spiffe://minimesh.local/ns/*/sa/web")))},
			get(batch, "/"), want{reason: ReasonNoAllowMatch}},
		{"identity trust domain glob", []*api.AuthorizationPolicy{policy("p", false, deny(from("spiffe://minimesh.local/**")))},
			get(batch, "/"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"identity other trust domain", []*api.AuthorizationPolicy{policy("p", false, allow(from("spiffe://minimesh.local/**")))},
			get(foreign, "/"), want{reason: ReasonNoAllowMatch}},
		{"identity star", []*api.AuthorizationPolicy{policy("p", false, allow(from("*")))},
			get(foreign, "/"), want{allowed: true, action: ActionAllow, rule: "prod/p#0", reason: ReasonAllowRule}},
		{"identity star needs a peer", []*api.AuthorizationPolicy{policy("p", false, allow(from("*")))},
			get("", "/"), want{reason: ReasonNoAllowMatch}},
		{"any of the identities", []*api.AuthorizationPolicy{policy("p", false, allow(from(batch, web)))},
			get(web, "/"), want{allowed: true, action: ActionAllow, rule: "prod/p#0", reason: ReasonAllowRule}},

		// Methods.
		{"method matches", []*api.AuthorizationPolicy{policy("p", false, allow(methods("GET", "HEAD")))},
			Request{Peer: web, Method: "HEAD", Path: "/"}, want{allowed: true, action: ActionAllow, rule: "prod/p#0", reason: ReasonAllowRule}},
		{"method misses", []*api.AuthorizationPolicy{policy("p", false, allow(methods("GET", "HEAD")))},
			Request{Peer: web, Method: "POST", Path: "/"}, want{reason: ReasonNoAllowMatch}},
		{"methods are case-sensitive", []*api.AuthorizationPolicy{policy("p", false, deny(methods("DELETE")))},
			Request{Peer: web, Method: "delete", Path: "/"}, want{allowed: true, reason: ReasonNoAllowRules}},

		// Conditions combine with AND.
		{"all conditions match", []*api.AuthorizationPolicy{policy("p", false, deny(from(web), prefix("/admin"), methods("POST")))},
			Request{Peer: web, Method: "POST", Path: "/admin/x"}, want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
		{"identity differs", []*api.AuthorizationPolicy{policy("p", false, deny(from(web), prefix("/admin"), methods("POST")))},
			Request{Peer: batch, Method: "POST", Path: "/admin/x"}, want{allowed: true, reason: ReasonNoAllowRules}},
		{"path differs", []*api.AuthorizationPolicy{policy("p", false, deny(from(web), prefix("/admin"), methods("POST")))},
			Request{Peer: web, Method: "POST", Path: "/api"}, want{allowed: true, reason: ReasonNoAllowRules}},
		{"method differs", []*api.AuthorizationPolicy{policy("p", false, deny(from(web), prefix("/admin"), methods("POST")))},
			Request{Peer: web, Method: "GET", Path: "/admin/x"}, want{allowed: true, reason: ReasonNoAllowRules}},
		{"empty rule matches all", []*api.AuthorizationPolicy{policy("p", false, deny())},
			get("", "/"), want{action: ActionDeny, rule: "prod/p#0", reason: ReasonDenyRule}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Compile(tt.policies)
			if err != nil {
				t.Fatal(err)
			}
			d := e.Check(tt.req)
			got := want{
				allowed: d.Allowed, action: d.Action, rule: ref(d.Policy, d.Rule), reason: d.Reason,
				audit: ref(d.AuditPolicy, d.AuditRule),
			}
			if d.DryRun {
				got.dryRun = ref(d.DryRunPolicy, d.DryRunRule)
				if got.dryRun == "" {
					got.dryRun = "default"
				}
			} else if d.DryRunPolicy != "" || d.DryRunRule != -1 {
				t.Errorf("dry-run rule set without DryRun: %+v", d)
			}
			if d.Audit != (got.audit != "") {
				t.Errorf("Audit = %v with rule %q", d.Audit, got.audit)
			}
			if got != tt.want {
				t.Errorf("Check(%+v)\n got %+v\nwant %+v", tt.req, got, tt.want)
			}
			// Explain decides the same (the paths here are normalized).
			if x := e.Explain(tt.req); x.Decision != d || x.PathError != nil {
				t.Errorf("Explain = %+v, Check = %+v", x.Decision, d)
			}
		})
	}
}

func TestNilEngineAllows(t *testing.T) {
	var e *Engine
	if d := e.Check(Request{Path: "/"}); !d.Allowed || d.Reason != ReasonNoPolicies {
		t.Errorf("nil engine: %+v", d)
	}
	if e.Service() != "" {
		t.Error("nil engine has a service")
	}
}

func TestCompileErrors(t *testing.T) {
	other := policy("o", false, allow())
	other.Spec.Service = "web"
	tests := []struct {
		name     string
		policies []*api.AuthorizationPolicy
		err      error
		text     string
	}{
		{"nil policy", []*api.AuthorizationPolicy{nil}, ErrInvalidPolicy, "nil policy"},
		{"no rules", []*api.AuthorizationPolicy{policy("p", false)}, api.ErrInvalid, "spec.rules"},
		{"bad identity", []*api.AuthorizationPolicy{policy("p", false, allow(from("spiffe://x/**/a")))}, api.ErrInvalid, "spec.rules[0].from"},
		{"no action", []*api.AuthorizationPolicy{policy("p", false, mkRule(0))}, ErrInvalidPolicy, "action"},
		{"relative path", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("admin")))}, api.ErrInvalid, "paths[0]"},
		{"encoded slash can never match", []*api.AuthorizationPolicy{policy("p", false, deny(prefix("/a%2Fb")))}, ErrInvalidPolicy, "can never match"},
		{"path parameter can never match", []*api.AuthorizationPolicy{policy("p", false, allow(), deny(exact("/a;b")))}, ErrInvalidPolicy, "spec.rules[1]: paths[0]"},
		{"mixed services", []*api.AuthorizationPolicy{policy("p", false, allow()), other}, ErrMixedServices, `"web"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Compile(tt.policies)
			if !errors.Is(err, tt.err) || e != nil {
				t.Fatalf("Compile = %v, %v; want %v", e, err, tt.err)
			}
			if !errors.Is(err, ErrInvalidPolicy) && !errors.Is(err, ErrMixedServices) {
				t.Errorf("%v wraps no sentinel of this package", err)
			}
			if !strings.HasPrefix(err.Error(), "authz: ") || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q: want prefix authz: and %q", err, tt.text)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	e, err := Compile([]*api.AuthorizationPolicy{
		policy("admin", false, deny(prefix("/admin"), fold()), allow(from("spiffe://minimesh.local/ns/prod/sa/*"), methods("GET", "POST"))),
		policy("canary", true, deny(from(batch), methods("POST"))),
		policy("watch", false, audit(prefix("/api/"))),
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		req     Request
		allowed bool
		lines   []string
	}{
		{Request{Peer: web, Method: "GET", Path: "//x/../ADMIN/./users"}, false, []string{
			"DENY GET /ADMIN/users from " + web,
			"  matched a deny rule: policy prod/admin rule 0: deny paths [prefix /admin (case-insensitive)]",
		}},
		{Request{Peer: batch, Method: "POST", Path: "/api/%6Aobs"}, true, []string{
			"ALLOW POST /api/jobs from " + batch,
			"  matched an allow rule: policy prod/admin rule 1: allow from [spiffe://minimesh.local/ns/prod/sa/*] methods [GET POST]",
			"  dry-run would deny: policy prod/canary rule 0: deny (dry-run) from [" + batch + "] methods [POST]",
			"  audited: policy prod/watch rule 0: audit paths [prefix /api/]",
		}},
		{Request{Peer: webDev, Method: "GET", Path: "/"}, false, []string{
			"DENY GET / from " + webDev,
			"  " + ReasonNoAllowMatch,
		}},
	}
	for _, tt := range tests {
		x := e.Explain(tt.req)
		if x.Decision.Allowed != tt.allowed {
			t.Errorf("Explain(%+v).Allowed = %v", tt.req, x.Decision.Allowed)
		}
		if got, want := x.String(), strings.Join(tt.lines, "\n")+"\n"; got != want {
			t.Errorf("Explain(%+v):\n%s\nwant:\n%s", tt.req, got, want)
		}
		// Check on the normalized request decides the same.
		if d := e.Check(x.Request); d != x.Decision {
			t.Errorf("Check = %+v, Explain = %+v", d, x.Decision)
		}
	}

	x := e.Explain(Request{Peer: web, Method: "GET", Path: "/x%2F..%2Fadmin"})
	if x.Decision.Allowed || x.PathError == nil || !strings.Contains(x.String(), "path refused (400)") {
		t.Errorf("refused path: %+v\n%s", x, x)
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	e, err := Compile(benchPolicies())
	if err != nil {
		t.Fatal(err)
	}
	reqs := []Request{
		{Peer: web, Method: "GET", Path: "/api/v1/users"},
		{Peer: batch, Method: "DELETE", Path: "/api/v1/users"},
		{Peer: web, Method: "GET", Path: "/ADMIN/x"},
	}
	for _, r := range reqs {
		if n := testing.AllocsPerRun(100, func() { e.Check(r) }); n != 0 {
			t.Errorf("Check(%+v): %v allocations", r, n)
		}
	}
}

func TestActionString(t *testing.T) {
	for a, s := range map[Action]string{ActionNone: "none", ActionAllow: "allow", ActionDeny: "deny", ActionAudit: "audit", 42: "none"} {
		if a.String() != s {
			t.Errorf("%d.String() = %q, want %q", a, a.String(), s)
		}
	}
}

func benchPolicies() []*api.AuthorizationPolicy {
	var rules []*meshv1.AuthorizationRule
	for _, sa := range []string{"a", "b", "c", "d", "e", "f"} {
		rules = append(rules, allow(from("spiffe://minimesh.local/ns/prod/sa/"+sa), prefix("/api/"+sa), methods("GET", "POST")))
	}
	rules = append(rules, allow(from("spiffe://minimesh.local/ns/prod/sa/*"), prefix("/api/"), methods("GET")))
	return []*api.AuthorizationPolicy{
		policy("admin", false, deny(prefix("/admin"), fold()), deny(from("spiffe://minimesh.local/ns/dev/**"))),
		policy("api", false, rules...),
		policy("audit", false, audit(methods("DELETE"))),
	}
}
