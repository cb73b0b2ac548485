package api_test

import (
	"strings"
	"testing"

	"minimesh/api"
)

func TestCompileRegex(t *testing.T) {
	tests := []struct {
		expr    string
		match   []string
		noMatch []string
	}{
		{"/v[0-9]+/items/.*", []string{"/v1/items/", "/v12/items/a/b"}, []string{"/v1/items", "/x/v1/items/", "/vx/items/"}},
		{"a|b", []string{"a", "b"}, []string{"ab", "xa", "bx"}},
		{"(?i)/admin", []string{"/ADMIN", "/admin"}, []string{"/admin/x"}},
		{"a*", []string{"", "aaa"}, []string{"b"}},
	}
	for _, tc := range tests {
		re, err := api.CompileRegex(tc.expr)
		if err != nil {
			t.Fatalf("CompileRegex(%q): %v", tc.expr, err)
		}
		for _, s := range tc.match {
			if !re.MatchString(s) {
				t.Errorf("%q does not match %q", tc.expr, s)
			}
		}
		for _, s := range tc.noMatch {
			if re.MatchString(s) {
				t.Errorf("%q matches %q: it must match whole strings only", tc.expr, s)
			}
		}
	}
}

func TestCompileRegexErrors(t *testing.T) {
	tests := []struct{ expr, want string }{
		{"", "must not be empty"},
		{strings.Repeat("a", api.MaxRegexLength+1), "longer than 1024 bytes"},
		{"a)|(b", "unexpected )"},
		{"(a", "missing closing )"},
		{`(a)\1`, "invalid escape"},
		{"(?=a)", "invalid or unsupported Perl syntax"},
		{"a{1001}", "invalid repeat count"},
		{strings.Repeat("[0-9]{1000}", 6), "too complex"},
	}
	for _, tc := range tests {
		_, err := api.CompileRegex(tc.expr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CompileRegex(%.30q) = %v, want …%s…", tc.expr, err, tc.want)
		}
	}
}

// FuzzCompileRegex: whatever compiles is capped and matches only whole
// strings: exactly what the unanchored expression matches as a whole.
func FuzzCompileRegex(f *testing.F) {
	f.Add("/v[0-9]+/.*", "/v1/x")
	f.Add("a|b", "ab")
	f.Add("a)|(b", "b")
	f.Add("(?s).", "\n")
	f.Add("$^", "")
	f.Add(`\z|a`, "a")
	f.Fuzz(func(t *testing.T, expr, s string) {
		re, err := api.CompileRegex(expr)
		if err != nil {
			return
		}
		if len(expr) > api.MaxRegexLength {
			t.Fatalf("accepted %d bytes", len(expr))
		}
		if re.MatchString(s) {
			loc := re.FindStringIndex(s)
			if loc == nil || loc[0] != 0 || loc[1] != len(s) {
				t.Fatalf("%q matches %q but not as a whole: %v", expr, s, loc)
			}
		}
	})
}
