package api_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"minimesh/api"
)

func TestIdentityPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{"*",
			[]string{"spiffe://minimesh.local/ns/prod/sa/web", "spiffe://other/x"},
			[]string{""}},
		{"spiffe://minimesh.local/ns/prod/sa/web",
			[]string{"spiffe://minimesh.local/ns/prod/sa/web"},
			[]string{"spiffe://minimesh.local/ns/prod/sa/web2", "spiffe://minimesh.local/ns/prod/sa/we", "spiffe://minimesh.local/ns/prod/sa/web/x",
				"spiffe://minimesh.local/ns/prod/sa", "spiffe://other.local/ns/prod/sa/web", "spiffe://minimesh.localx/ns/prod/sa/web"}},
		{"spiffe://minimesh.local/ns/prod/sa/*",
			[]string{"spiffe://minimesh.local/ns/prod/sa/web", "spiffe://minimesh.local/ns/prod/sa/a"},
			[]string{"spiffe://minimesh.local/ns/prod/sa/web/extra", "spiffe://minimesh.local/ns/prod/sa", "spiffe://minimesh.local/ns/prod/sa/",
				"spiffe://minimesh.local/ns/dev/sa/web", "spiffe://evil.local/ns/prod/sa/web"}},
		{"spiffe://minimesh.local/ns/*/sa/web",
			[]string{"spiffe://minimesh.local/ns/prod/sa/web", "spiffe://minimesh.local/ns/dev/sa/web"},
			[]string{"spiffe://minimesh.local/ns/a/b/sa/web", "spiffe://minimesh.local/ns/prod/sa/api"}},
		{"spiffe://minimesh.local/ns/prod/sa/web-*",
			[]string{"spiffe://minimesh.local/ns/prod/sa/web-", "spiffe://minimesh.local/ns/prod/sa/web-canary"},
			[]string{"spiffe://minimesh.local/ns/prod/sa/web", "spiffe://minimesh.local/ns/prod/sa/web-canary/x"}},
		{"spiffe://minimesh.local/ns/prod/sa/*-worker-*",
			[]string{"spiffe://minimesh.local/ns/prod/sa/a-worker-b", "spiffe://minimesh.local/ns/prod/sa/-worker-", "spiffe://minimesh.local/ns/prod/sa/x-worker-worker-y"},
			[]string{"spiffe://minimesh.local/ns/prod/sa/a-worker", "spiffe://minimesh.local/ns/prod/sa/worker-b"}},
		{"spiffe://minimesh.local/**",
			[]string{"spiffe://minimesh.local/a", "spiffe://minimesh.local/ns/prod/sa/web"},
			[]string{"spiffe://minimesh.local", "spiffe://minimesh.local/", "spiffe://minimesh.local/a/", "spiffe://minimesh.local/a//b", "spiffe://other/a"}},
		{"spiffe://minimesh.local/ns/*/**",
			[]string{"spiffe://minimesh.local/ns/prod/sa", "spiffe://minimesh.local/ns/prod/sa/web"},
			[]string{"spiffe://minimesh.local/ns/prod", "spiffe://minimesh.local/ns"}},
	}
	for _, tc := range tests {
		p, err := api.ParseIdentityPattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParseIdentityPattern(%q): %v", tc.pattern, err)
		}
		if p.String() != tc.pattern {
			t.Errorf("String() = %q", p.String())
		}
		if p.IsExact() != !strings.Contains(tc.pattern, "*") {
			t.Errorf("%q: IsExact() = %v", tc.pattern, p.IsExact())
		}
		for _, id := range tc.match {
			if !p.Match(id) {
				t.Errorf("%q does not match %q", tc.pattern, id)
			}
		}
		for _, id := range tc.noMatch {
			if p.Match(id) {
				t.Errorf("%q matches %q", tc.pattern, id)
			}
		}
	}
	var zero api.IdentityPattern
	if zero.Match("spiffe://minimesh.local/a") || zero.Match("") {
		t.Error("the zero IdentityPattern matches")
	}
}

func TestIdentityPatternErrors(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{"", "must not be empty"},
		{"web", `must be "*" or start with "spiffe://"`},
		{"**", `must be "*" or start with "spiffe://"`},
		{"SPIFFE://td/a", `must be "*" or start with "spiffe://"`},
		{"spiffe://td", "has no path"},
		{"spiffe://td/", "has no path"},
		{"spiffe://*/a", "the trust domain may not hold '*'"},
		{"spiffe://t*d/a", "the trust domain may not hold '*'"},
		{"spiffe://TD/a", "bad trust domain"},
		{"spiffe://td:8080/a", "bad trust domain"},
		{"spiffe://td/a//b", "has an empty path segment"},
		{"spiffe://td/a/", "has an empty path segment"},
		{"spiffe://td/./a", `has a "." path segment`},
		{"spiffe://td/a/..", `has a ".." path segment`},
		{"spiffe://td/**/a", `"**" may only be the last segment`},
		{"spiffe://td/a**", `"**" must be a whole segment`},
		{"spiffe://td/a b", "not allowed in a path segment"},
		{"spiffe://td/a?b", "not allowed in a path segment"},
		{"spiffe://td/" + strings.Repeat("a", 2048), "longer than 2048 bytes"},
	}
	for _, tc := range tests {
		_, err := api.ParseIdentityPattern(tc.pattern)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseIdentityPattern(%.40q) = %v, want …%s…", tc.pattern, err, tc.want)
		}
	}
}

func TestMatchAny(t *testing.T) {
	var ps []api.IdentityPattern
	for _, s := range []string{"spiffe://td/ns/a/sa/*", "spiffe://td/ns/b/sa/web"} {
		p, err := api.ParseIdentityPattern(s)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if !api.MatchAny(ps, "spiffe://td/ns/b/sa/web") || !api.MatchAny(ps, "spiffe://td/ns/a/sa/x") || api.MatchAny(ps, "spiffe://td/ns/b/sa/x") {
		t.Error("MatchAny is not the union of its patterns")
	}
	if api.MatchAny(nil, "spiffe://td/a") {
		t.Error("no patterns match")
	}
}

func TestIdentityPatternMatchDoesNotAllocate(t *testing.T) {
	p, err := api.ParseIdentityPattern("spiffe://minimesh.local/ns/*/sa/web-*/**")
	if err != nil {
		t.Fatal(err)
	}
	id := "spiffe://minimesh.local/ns/prod/sa/web-canary/x/y"
	if n := testing.AllocsPerRun(100, func() {
		if !p.Match(id) {
			t.Fatal("no match")
		}
	}); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
}

// referenceRegexp is IdentityPattern's documented meaning written as a
// regular expression, for the fuzz test to compare against.
func referenceRegexp(pattern string) *regexp.Regexp {
	if pattern == "*" {
		return regexp.MustCompile(`^(?s:.+)$`)
	}
	rest := strings.TrimPrefix(pattern, "spiffe://")
	td, path, _ := strings.Cut(rest, "/")
	var b strings.Builder
	b.WriteString("^" + regexp.QuoteMeta("spiffe://"+td))
	for seg := range strings.SplitSeq(path, "/") {
		b.WriteString("/")
		if seg == "**" {
			b.WriteString(`[^/]+(?:/[^/]+)*`)
			continue
		}
		if strings.Trim(seg, "*") == "" {
			b.WriteString(`[^/]+`) // an ID's segments are never empty
			continue
		}
		parts := strings.Split(seg, "*")
		for i, part := range parts {
			if i > 0 {
				b.WriteString(`[^/]*`)
			}
			b.WriteString(regexp.QuoteMeta(part))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// FuzzIdentityPattern compares Match with the reference meaning on every
// pattern that parses, and checks that a pattern without wildcards matches
// itself only.
func FuzzIdentityPattern(f *testing.F) {
	f.Add("spiffe://minimesh.local/ns/prod/sa/*", "spiffe://minimesh.local/ns/prod/sa/web")
	f.Add("spiffe://minimesh.local/ns/*/sa/web-*", "spiffe://minimesh.local/ns/dev/sa/web-canary")
	f.Add("spiffe://minimesh.local/**", "spiffe://minimesh.local/a/b/c")
	f.Add("spiffe://td/a*b*c", "spiffe://td/aXbYbc")
	f.Add("*", "")
	f.Add("spiffe://td/a", "spiffe://td/a/")
	f.Add("spiffe://td/**", "spiffe://td/a//b")
	f.Fuzz(func(t *testing.T, pattern, id string) {
		p, err := api.ParseIdentityPattern(pattern)
		if err != nil {
			return
		}
		got := p.Match(id)
		if want := referenceRegexp(pattern).MatchString(id); got != want {
			t.Fatalf("%q.Match(%q) = %v, the reference says %v", pattern, id, got, want)
		}
		if p.IsExact() && p.Match(id) != (id == pattern) {
			t.Fatalf("exact %q.Match(%q) = %v", pattern, id, got)
		}
	})
}

func TestParseIdentityPatterns(t *testing.T) {
	ps, err := api.ParseIdentityPatterns([]string{"*", "spiffe://td/a"})
	if err != nil || len(ps) != 2 || !ps[1].IsExact() {
		t.Fatalf("ParseIdentityPatterns = %v, %v", ps, err)
	}
	_, err = api.ParseIdentityPatterns([]string{"*", "web"})
	if !errors.Is(err, api.ErrInvalidPattern) || !strings.HasPrefix(err.Error(), `api: invalid pattern: identity 1: "web"`) {
		t.Errorf("ParseIdentityPatterns = %v", err)
	}
	if _, err := api.ParseIdentityPattern("web"); !errors.Is(err, api.ErrInvalidPattern) || !strings.HasPrefix(err.Error(), "api: invalid pattern: identity: ") {
		t.Errorf("ParseIdentityPattern = %v", err)
	}
	if _, err := api.CompileRegex("(a"); !errors.Is(err, api.ErrInvalidPattern) || !strings.HasPrefix(err.Error(), "api: invalid pattern: regex: ") {
		t.Errorf("CompileRegex = %v", err)
	}
}
