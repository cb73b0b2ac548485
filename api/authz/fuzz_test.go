package authz

import (
	"strings"
	"testing"

	"minimesh/api/pathnorm"
)

// FuzzExplain: for any request, Explain decides exactly as Check does on
// the normalized path, refuses what pathnorm refuses, and never lets a
// path the app would read as under /admin (in any ASCII case) past the
// case-insensitive DENY rule.
func FuzzExplain(f *testing.F) {
	for _, s := range []string{"/admin", "//x/../ADMIN", "/%61dmin", "/adm%C4%B0n", "/api/v1", "/a%2Fb", "/%E2%84%AAey"} {
		f.Add(web, "GET", s)
	}
	e, err := Compile(benchPolicies())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, peer, method, path string) {
		x := e.Explain(Request{Peer: peer, Method: method, Path: path})
		norm, nerr := pathnorm.Normalize(path)
		if nerr != nil {
			if x.PathError == nil || x.Decision.Allowed {
				t.Fatalf("%q refused by pathnorm (%v) but Explain: %+v", path, nerr, x)
			}
			return
		}
		if x.PathError != nil || x.Request.Path != norm {
			t.Fatalf("Explain(%q): path %q, error %v; pathnorm gives %q", path, x.Request.Path, x.PathError, norm)
		}
		d := e.Check(Request{Peer: peer, Method: method, Path: norm})
		if d != x.Decision {
			t.Fatalf("Check %+v, Explain %+v", d, x.Decision)
		}
		if d.Allowed && strings.HasPrefix(strings.ToLower(norm), "/admin") {
			t.Fatalf("%q (normalized %q) allowed past DENY prefix /admin (case-insensitive)", path, norm)
		}
		if (d.Rule >= 0) != (x.Rule != "") {
			t.Fatalf("rule %d described as %q", d.Rule, x.Rule)
		}
	})
}
