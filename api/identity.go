package api

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxIdentityLength caps identities and identity patterns, as SPIFFE caps
// IDs.
const MaxIdentityLength = 2048

// IdentityPattern matches SPIFFE IDs. Its forms:
//
//   - "*" matches every identity: any non-empty string, so any
//     authenticated source but no unauthenticated one.
//   - "spiffe://<trust-domain>/<segment>/..." where the trust domain is
//     literal and compared exactly, and each path segment is literal or
//     holds '*' wildcards. A '*' matches any run of characters, possibly
//     empty, within one segment: it never crosses a '/'. So
//     "spiffe://minimesh.local/ns/prod/sa/*" matches every service account
//     of namespace prod, "spiffe://minimesh.local/ns/*/sa/web" matches web
//     in every namespace, "spiffe://minimesh.local/ns/prod/sa/web-*" matches
//     web-canary, but none of them matches a deeper path.
//   - A final segment "**" matches one or more whole segments:
//     "spiffe://minimesh.local/**" matches every identity of the trust
//     domain. "**" anywhere else is an error.
//
// A pattern without '*' is a SPIFFE ID and matches only itself. Segments
// hold the characters SPIFFE allows (letters, digits, '.', '-', '_') plus
// '*'; "." and ".." are not segments. Match expects a valid SPIFFE ID, such
// as one taken from a verified certificate; it does not allocate.
type IdentityPattern struct {
	raw    string
	any    bool     // "*"
	prefix string   // "spiffe://<trust-domain>/"
	segs   []string // segment patterns
	rest   bool     // a final "**" follows segs
}

// ParseIdentityPattern parses a pattern; see IdentityPattern. Its errors
// wrap ErrInvalidPattern.
func ParseIdentityPattern(s string) (IdentityPattern, error) {
	p, err := parseIdentityPattern(s)
	if err != nil {
		return IdentityPattern{}, fmt.Errorf("%w: identity: %v", ErrInvalidPattern, err)
	}
	return p, nil
}

// parseIdentityPattern's errors are reasons for a FieldError.
func parseIdentityPattern(s string) (IdentityPattern, error) {
	p := IdentityPattern{raw: s}
	if s == "*" {
		p.any = true
		return p, nil
	}
	if s == "" {
		return IdentityPattern{}, errors.New("must not be empty")
	}
	if len(s) > MaxIdentityLength {
		return IdentityPattern{}, fmt.Errorf("longer than %d bytes", MaxIdentityLength)
	}
	const scheme = "spiffe://"
	if !strings.HasPrefix(s, scheme) {
		return IdentityPattern{}, fmt.Errorf("%q must be \"*\" or start with %q", s, scheme)
	}
	td, path, ok := strings.Cut(s[len(scheme):], "/")
	if !ok || path == "" {
		return IdentityPattern{}, fmt.Errorf("%q has no path", s)
	}
	if strings.Contains(td, "*") {
		return IdentityPattern{}, fmt.Errorf("%q: the trust domain may not hold '*'", s)
	}
	if _, err := spiffeid.TrustDomainFromString(td); err != nil {
		return IdentityPattern{}, fmt.Errorf("%q: bad trust domain: %v", s, err)
	}
	p.prefix = s[:len(scheme)+len(td)+1]
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		switch {
		case seg == "":
			return IdentityPattern{}, fmt.Errorf("%q has an empty path segment", s)
		case seg == "." || seg == "..":
			return IdentityPattern{}, fmt.Errorf("%q has a %q path segment", s, seg)
		case seg == "**":
			if i != len(segs)-1 {
				return IdentityPattern{}, fmt.Errorf("%q: \"**\" may only be the last segment", s)
			}
			p.rest = true
			continue
		case strings.Contains(seg, "**"):
			return IdentityPattern{}, fmt.Errorf("%q: \"**\" must be a whole segment", s)
		}
		for j := 0; j < len(seg); j++ {
			if c := seg[j]; !isSegmentChar(c) && c != '*' {
				return IdentityPattern{}, fmt.Errorf("%q: character %q not allowed in a path segment", s, c)
			}
		}
		p.segs = append(p.segs, seg)
	}
	return p, nil
}

func isSegmentChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_'
}

// String returns the pattern as written.
func (p IdentityPattern) String() string { return p.raw }

// IsExact reports whether the pattern has no wildcard, so that it matches
// exactly one SPIFFE ID.
func (p IdentityPattern) IsExact() bool { return p.raw != "" && !strings.Contains(p.raw, "*") }

// Match reports whether id matches the pattern. The zero IdentityPattern
// matches nothing.
func (p IdentityPattern) Match(id string) bool {
	if p.any {
		return id != ""
	}
	if p.prefix == "" || !strings.HasPrefix(id, p.prefix) {
		return false
	}
	rest := id[len(p.prefix):]
	for i, sp := range p.segs {
		seg := rest
		j := strings.IndexByte(rest, '/')
		if j >= 0 {
			seg, rest = rest[:j], rest[j+1:]
		} else {
			rest = ""
		}
		if seg == "" || !matchSegment(sp, seg) {
			return false
		}
		if j < 0 {
			// The id has no more segments: a match only if the pattern
			// has none either.
			return i == len(p.segs)-1 && !p.rest
		}
	}
	// The id has more segments; only "**" takes them, one or more,
	// none empty.
	if !p.rest || rest == "" || rest[0] == '/' || rest[len(rest)-1] == '/' || strings.Contains(rest, "//") {
		return false
	}
	return true
}

// matchSegment matches s against a pattern whose only metacharacter is '*',
// in O(len(p)·len(s)) time at worst and without allocating.
func matchSegment(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// ParseIdentityPatterns parses each of patterns.
func ParseIdentityPatterns(patterns []string) ([]IdentityPattern, error) {
	out := make([]IdentityPattern, len(patterns))
	for i, s := range patterns {
		p, err := parseIdentityPattern(s)
		if err != nil {
			return nil, fmt.Errorf("%w: identity %d: %v", ErrInvalidPattern, i, err)
		}
		out[i] = p
	}
	return out, nil
}

// MatchAny reports whether id matches any of patterns.
func MatchAny(patterns []IdentityPattern, id string) bool {
	for _, p := range patterns {
		if p.Match(id) {
			return true
		}
	}
	return false
}
