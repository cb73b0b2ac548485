package pathnorm_test

import (
	"fmt"
	"strings"
	"testing"

	"minimesh/api"
	"minimesh/api/authz"
	"minimesh/api/pathnorm"
	meshv1 "minimesh/proto/mesh/v1"
)

// corpus returns spellings of paths at, under, around and beside /admin:
// encodings, dot segments, double slashes, case, ';' parameters,
// backslashes, NUL, unicode look-alikes and overlong UTF-8.
func corpus() []string {
	set := map[string]bool{}
	add := func(s string) { set[s] = true }

	// "admin" with every subset of its letters percent-encoded, in upper-
	// and lower-case hex, and in a few letter cases.
	var names []string
	for mask := range 32 {
		for _, hex := range []string{"%%%02X", "%%%02x"} {
			var b strings.Builder
			for i, c := range "admin" {
				if mask&(1<<i) != 0 {
					fmt.Fprintf(&b, hex, c)
				} else {
					b.WriteRune(c)
				}
			}
			names = append(names, b.String())
		}
	}
	names = append(names, "ADMIN", "Admin", "aDmIn", "%41DMIN", "%41dmin", "adm%49n", "administrator", "admi", "xadmin", "api")

	prefixes := []string{
		"", "/.", "/./.", "/x/..", "/x/%2e%2e", "/x/.%2E", "/x/%2E.", "/x/y/../..", "/..", "/../..", "/%2e", "/%2E%2E",
		"/", "//", "/x//..", "/x/./..", "/x/..;/..", "/x/%2e%2e%2f..", "/x\\..",
	}
	suffixes := []string{
		"", "/", "/users", "/.", "/..", "/%2e%2e", "//users", "/./users", ";x", ";jsessionid=1/users",
		"%2Fusers", "%2fusers", "%5Cusers", "\\users", "%00", "\x00", "%0a", "%", "%2", "%zz", "?q=1", "#f", "%3Bx", "%20", "%2e",
	}
	for _, n := range names {
		for _, p := range prefixes {
			for _, s := range suffixes {
				add(p + "/" + n + s)
			}
		}
	}
	for _, s := range []string{
		// Unicode: look-alikes are other paths; none decodes to /admin.
		"/ａdmin", "/%EF%BD%81dmin", "/admin\u200b", "/adm\u0131n", "/adm\u0130n", "/\u0430dmin", "/admin\u00a0",
		"/%E2%80%8Badmin", "/admin%E3%80%80", "/ａ/../admin", "/%C3%A4dmin",
		// Letters whose Unicode case mapping is an ASCII letter of "admin".
		"/ADM\u0130N", "/adm%C4%B0n/x", "/adm%c4%b0n", "/ADM\u0131N", "/adm%C4%B1n", "/x/../adm\u0130n",
		// Overlong and otherwise invalid UTF-8.
		"/%C0%AFadmin", "/x/%C0%AE%C0%AE/admin", "/x%C0%AF..%C0%AFadmin", "/%C1%81dmin", "/%E0%80%AE%E0%80%AE/admin",
		"/%F0%80%80%AF/admin", "/%ED%A0%80admin", "/\xc0\xafadmin", "/\xe0\x80\xaeadmin", "/adm\xffin", "/%FFadmin",
		// Double encoding: one decoding does not make /admin.
		"/%2561dmin", "/%252e%252e/admin", "/x/%252e%252e/admin", "/%25%36%31dmin",
		// Control characters.
		"/admin\t", "/\tadmin", "/admin\r\n", "/admin%0d%0a", "/%1badmin", "/admin%7f", "/admin%C2%85",
		// Tricks with the query or a fragment.
		"/admin?", "/x?/../admin", "/x#/../admin",
		// Not absolute.
		"admin", "./admin", "../admin", "*", "%2Fadmin", "\\admin",
	} {
		add(s)
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	return out
}

// meaning is what a server that decodes once makes of a path: percent-
// decoded, '\' taken as '/', ";params" stripped from each segment, cut at
// NUL, dot segments resolved and empty segments dropped. It is lenient on
// purpose: it is the union of the interpretations servers apply.
func meaning(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' && i+2 < len(p) {
			var v byte
			if _, err := fmt.Sscanf(p[i+1:i+3], "%02x", &v); err == nil {
				c = v
				i += 2
			}
		}
		if c == 0 {
			break
		}
		if c == '\\' {
			c = '/'
		}
		b.WriteByte(c)
	}
	var out []string
	for _, seg := range strings.Split(b.String(), "/") {
		seg, _, _ = strings.Cut(seg, ";")
		switch seg {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, seg)
		}
	}
	return "/" + strings.Join(out, "/")
}

func denyAdmin(t *testing.T, caseInsensitive bool) *authz.Engine {
	t.Helper()
	e, err := authz.Compile([]*api.AuthorizationPolicy{{
		Metadata: api.Metadata{Name: "deny-admin", Namespace: "prod"},
		Spec: &meshv1.AuthorizationPolicySpec{Service: "api", Rules: []*meshv1.AuthorizationRule{{
			Action: meshv1.AuthorizationAction_AUTHORIZATION_ACTION_DENY,
			Paths: []*meshv1.AuthorizationPath{{
				Kind:            &meshv1.AuthorizationPath_Prefix{Prefix: "/admin"},
				CaseInsensitive: caseInsensitive,
			}},
		}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestCorpusAgainstDenyRule runs every spelling of the corpus through what
// the inbound proxy does — Normalize, then an authz Engine holding DENY
// prefix /admin — and checks that each is either refused (400) or
// normalized to a path that the rule decides correctly: denied exactly
// when the path, as the app will read it, is under /admin. The input's
// own meaning must also survive normalization, so no spelling of /admin
// turns into something else.
func TestCorpusAgainstDenyRule(t *testing.T) {
	paths := corpus()
	if len(paths) < 300 {
		t.Fatalf("corpus has %d paths, want at least 300", len(paths))
	}
	for _, fold := range []bool{false, true} {
		t.Run(fmt.Sprintf("case-insensitive=%v", fold), func(t *testing.T) {
			e := denyAdmin(t, fold)
			protected := func(p string) bool {
				if fold {
					// As a server that changes case with Unicode rules
					// would read it.
					return strings.HasPrefix(strings.ToLower(p), "/admin") || strings.HasPrefix(strings.ToUpper(p), "/ADMIN")
				}
				return strings.HasPrefix(p, "/admin")
			}
			var refused, denied, allowed int
			for _, raw := range paths {
				n, err := pathnorm.Normalize(raw)
				if err != nil {
					refused++
					continue
				}
				d := e.Check(authz.Request{Peer: "spiffe://minimesh.local/ns/prod/sa/web", Method: "GET", Path: n})
				if d.Allowed {
					allowed++
				} else {
					denied++
				}
				app := meaning(n)
				if protected(app) && d.Allowed {
					t.Errorf("%q normalized to %q reaches the app as %q, past the rule", raw, n, app)
				}
				if !protected(app) && !d.Allowed {
					t.Errorf("%q normalized to %q (%q to the app) was denied", raw, n, app)
				}
				if m := meaning(raw); m != app {
					t.Errorf("%q means %q but was normalized to %q, which means %q", raw, m, n, app)
				}
			}
			t.Logf("%d paths: %d refused, %d denied, %d allowed", len(paths), refused, denied, allowed)
			if refused == 0 || denied == 0 || allowed == 0 {
				t.Errorf("corpus does not exercise every outcome: %d refused, %d denied, %d allowed", refused, denied, allowed)
			}
		})
	}
}
