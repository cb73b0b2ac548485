package authz

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"minimesh/api"
	"minimesh/api/pathnorm"
	meshv1 "minimesh/proto/mesh/v1"
)

// Action is what a rule does to the requests it matches.
type Action uint8

// The actions. ActionNone marks a decision that no rule made (a default).
const (
	ActionNone Action = iota
	ActionAllow
	ActionDeny
	ActionAudit
)

// String returns "none", "allow", "deny" or "audit".
func (a Action) String() string {
	switch a {
	case ActionAllow:
		return "allow"
	case ActionDeny:
		return "deny"
	case ActionAudit:
		return "audit"
	}
	return "none"
}

// Reasons, in Decision.Reason. They are constants so that a decision costs
// no allocation; compare against them or show them.
const (
	ReasonDenyRule     = "matched a deny rule"
	ReasonAllowRule    = "matched an allow rule"
	ReasonNoAllowMatch = "no allow rule matched (default deny when allow rules exist)"
	ReasonNoAllowRules = "no allow rules (default allow)"
	ReasonNoPolicies   = "no authorization policy"
)

// Request is what a decision looks at.
type Request struct {
	// Peer is the caller's SPIFFE ID, from its verified certificate.
	Peer string
	// Method is the HTTP method, as sent, compared exactly with a rule's
	// methods (as Istio's `methods`): a rule naming GET does not cover
	// HEAD, nor "get". Policies name upper-case methods only, so the
	// proxies refuse (400) a method with a lower-case letter before it
	// gets here: apps that upper-case methods would otherwise serve
	// "delete" as the DELETE a rule denies.
	Method string
	// Path is the request path normalized by pathnorm.Normalize: Check
	// compares it as it is. (Explain normalizes it first.)
	Path string
}

// Decision is the outcome of Check.
type Decision struct {
	// Allowed is the enforced outcome: false means answer 403.
	Allowed bool
	// Action is the action of the rule that decided, ActionNone when a
	// default decided (see Reason).
	Action Action
	// Policy ("namespace/name") and Rule (index in its spec.rules) name
	// the rule that decided; "" and -1 when a default decided.
	Policy string
	Rule   int
	// Reason says why, as one of the Reason constants.
	Reason string

	// DryRun is set when the request is allowed but would be denied if the
	// dry-run policies were enforced; DryRunPolicy and DryRunRule name the
	// rule that would deny it ("" and -1: the default deny, because a
	// dry-run policy brings allow rules and none matched).
	DryRun       bool
	DryRunPolicy string
	DryRunRule   int

	// Audit is set when an AUDIT rule (of any policy, dry-run or not)
	// matched; AuditPolicy and AuditRule name the first one.
	Audit       bool
	AuditPolicy string
	AuditRule   int
}

// Engine decides requests for one service from its compiled policies. It
// is immutable and safe for concurrent use; on a change compile a new one
// and swap it in (an atomic.Pointer). A nil *Engine allows everything, as
// a service without policies does.
type Engine struct {
	service  string
	policies int

	deny        []*rule // enforced
	dryDeny     []*rule
	allow       []*rule // enforced
	dryAllow    []*rule
	audit       []*rule
	allowRules  bool // len(allow) > 0
	shadowAllow bool // len(allow)+len(dryAllow) > 0
}

type rule struct {
	policy  string // "namespace/name"
	index   int
	action  Action
	dryRun  bool
	from    []api.IdentityPattern
	paths   []pathMatch
	methods []string
	desc    string
}

type pathMatch struct {
	value  string // normalized
	prefix bool
	fold   bool // ASCII case-insensitive
}

// Compile builds an Engine from the AuthorizationPolicies of one service.
// Every policy is validated (as meshd does at apply time) and every path
// in a rule is normalized as requests are, so "/caf%c3%a9" and "/café"
// both match the request path "/caf%C3%A9"; a path that no normalized
// request can have ("/a%2Fb", "/a;b") is an error. No policies: an Engine
// that allows everything.
func Compile(policies []*api.AuthorizationPolicy) (*Engine, error) {
	sorted := slices.Clone(policies)
	slices.SortFunc(sorted, func(a, b *api.AuthorizationPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	e := &Engine{policies: len(sorted)}
	for _, p := range sorted {
		if p == nil {
			return nil, fmt.Errorf("%w: nil policy", ErrInvalidPolicy)
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
		}
		svc := p.Spec.GetService()
		if e.service == "" {
			e.service = svc
		} else if svc != e.service {
			return nil, fmt.Errorf("%w: %s is for %q, not %q", ErrMixedServices, api.KeyOf(p), svc, e.service)
		}
		name := p.Namespace + "/" + p.Name
		for i, r := range p.Spec.GetRules() {
			cr, err := compileRule(name, i, p.Spec.GetDryRun(), r)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: spec.rules[%d]: %w", ErrInvalidPolicy, api.KeyOf(p), i, err)
			}
			switch cr.action {
			case ActionDeny:
				if cr.dryRun {
					e.dryDeny = append(e.dryDeny, cr)
				} else {
					e.deny = append(e.deny, cr)
				}
			case ActionAllow:
				if cr.dryRun {
					e.dryAllow = append(e.dryAllow, cr)
				} else {
					e.allow = append(e.allow, cr)
				}
			case ActionAudit:
				e.audit = append(e.audit, cr)
			}
		}
	}
	e.allowRules = len(e.allow) > 0
	e.shadowAllow = e.allowRules || len(e.dryAllow) > 0
	return e, nil
}

func compileRule(policy string, index int, dryRun bool, r *meshv1.AuthorizationRule) (*rule, error) {
	cr := &rule{policy: policy, index: index, dryRun: dryRun, methods: slices.Clone(r.GetMethods())}
	switch r.GetAction() {
	case meshv1.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW:
		cr.action = ActionAllow
	case meshv1.AuthorizationAction_AUTHORIZATION_ACTION_DENY:
		cr.action = ActionDeny
	case meshv1.AuthorizationAction_AUTHORIZATION_ACTION_AUDIT:
		cr.action = ActionAudit
	default:
		return nil, fmt.Errorf("unknown action %v", r.GetAction())
	}
	for j, s := range r.GetFrom() {
		p, err := api.ParseIdentityPattern(s)
		if err != nil {
			return nil, fmt.Errorf("from[%d]: %w", j, err)
		}
		cr.from = append(cr.from, p)
	}
	for j, p := range r.GetPaths() {
		m := pathMatch{fold: p.GetCaseInsensitive()}
		raw := p.GetExact()
		if x, ok := p.GetKind().(*meshv1.AuthorizationPath_Prefix); ok {
			raw, m.prefix = x.Prefix, true
		}
		n, err := pathnorm.Normalize(raw)
		if err != nil {
			return nil, fmt.Errorf("paths[%d]: %q can never match a normalized request path: %w", j, raw, err)
		}
		m.value = n
		cr.paths = append(cr.paths, m)
	}
	cr.desc = describe(cr)
	return cr, nil
}

// describe renders a rule for people: `deny from [spiffe://td/ns/a/sa/*]
// paths [prefix /admin] methods [POST]`.
func describe(r *rule) string {
	var b strings.Builder
	b.WriteString(r.action.String())
	if r.dryRun {
		b.WriteString(" (dry-run)")
	}
	if len(r.from) > 0 {
		b.WriteString(" from [")
		for i, p := range r.from {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString(p.String())
		}
		b.WriteString("]")
	}
	if len(r.paths) > 0 {
		b.WriteString(" paths [")
		for i, p := range r.paths {
			if i > 0 {
				b.WriteString(" ")
			}
			if p.prefix {
				b.WriteString("prefix ")
			} else {
				b.WriteString("exact ")
			}
			b.WriteString(p.value)
			if p.fold {
				b.WriteString(" (case-insensitive)")
			}
		}
		b.WriteString("]")
	}
	if len(r.methods) > 0 {
		b.WriteString(" methods [")
		b.WriteString(strings.Join(r.methods, " "))
		b.WriteString("]")
	}
	if len(r.from)+len(r.paths)+len(r.methods) == 0 {
		b.WriteString(" every request")
	}
	return b.String()
}

func (r *rule) match(req *Request) bool {
	if len(r.methods) > 0 && !slices.Contains(r.methods, req.Method) {
		return false
	}
	if len(r.paths) > 0 && !r.matchPath(req.Path) {
		return false
	}
	if len(r.from) > 0 && !api.MatchAny(r.from, req.Peer) {
		return false
	}
	return true
}

func (r *rule) matchPath(p string) bool {
	for i := range r.paths {
		m := &r.paths[i]
		if m.fold {
			if matchFold(p, m.value, m.prefix) {
				return true
			}
			continue
		}
		if p == m.value || m.prefix && strings.HasPrefix(p, m.value) {
			return true
		}
	}
	return false
}

// matchFold reports whether the normalized path p equals v, or starts with
// it when prefix is set, comparing ASCII letters without regard to case.
// A non-ASCII letter of p (percent-encoded, as normalized paths hold them)
// also matches an ASCII letter of v when Unicode case mapping turns one
// into the other, because servers that change case with Unicode rules read
// "/admİn" lower-cased as "/admin" and "/admın" upper-cased as "/ADMIN";
// so such a spelling cannot slip past a case-insensitive rule.
func matchFold(p, v string, prefix bool) bool {
	i := 0
	for j := 0; j < len(v); j++ {
		if i >= len(p) {
			return false
		}
		a, b := p[i], v[j]
		switch {
		case a == b, isLetter(b) && a|0x20 == b|0x20:
			i++
			continue
		case a == '%' && isLetter(b):
			if r, n := decodeEscapedRune(p[i:]); n > 0 && foldsTo(r, b) {
				i += n
				continue
			}
		}
		return false
	}
	return prefix || i == len(p)
}

func isLetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

// decodeEscapedRune decodes the percent-encoded UTF-8 sequence at the
// start of s ("%C4%B0"), returning the rune and the bytes it takes, or 0
// and 0.
func decodeEscapedRune(s string) (rune, int) {
	var buf [utf8.UTFMax]byte
	for k := 0; k < len(buf) && 3*k+2 < len(s) && s[3*k] == '%'; k++ {
		h, ok1 := unhex(s[3*k+1])
		l, ok2 := unhex(s[3*k+2])
		if !ok1 || !ok2 {
			break
		}
		buf[k] = h<<4 | l
		if utf8.FullRune(buf[:k+1]) {
			r, size := utf8.DecodeRune(buf[:k+1])
			if r == utf8.RuneError || size != k+1 {
				return 0, 0
			}
			return r, 3 * (k + 1)
		}
	}
	return 0, 0
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// foldsTo reports whether Unicode case mapping or folding turns the
// non-ASCII rune r into the ASCII letter c (either case): İ to i, ı to I,
// the Kelvin sign to k, ſ to s.
func foldsTo(r rune, c byte) bool {
	lo, up := rune(c|0x20), rune(c&^0x20)
	if unicode.ToLower(r) == lo || unicode.ToUpper(r) == up {
		return true
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f == lo || f == up {
			return true
		}
	}
	return false
}

func first(rules []*rule, req *Request) *rule {
	for _, r := range rules {
		if r.match(req) {
			return r
		}
	}
	return nil
}

// Check decides a request: a matching enforced DENY rule denies; else,
// when enforced ALLOW rules exist, a matching one allows and none denies;
// with no ALLOW rules the request is allowed. Dry-run policies are
// evaluated alongside as if enforced, and only reported (DryRun). Check
// does not allocate.
func (e *Engine) Check(req Request) Decision {
	d, _ := e.check(&req)
	return d
}

// check also returns the deciding rules, for Explain.
func (e *Engine) check(req *Request) (d Decision, why [3]*rule) {
	d = Decision{Rule: -1, DryRunRule: -1, AuditRule: -1}
	if e == nil || e.policies == 0 {
		d.Allowed, d.Reason = true, ReasonNoPolicies
		return d, why
	}
	if r := first(e.audit, req); r != nil {
		d.Audit, d.AuditPolicy, d.AuditRule = true, r.policy, r.index
		why[2] = r
	}
	if r := first(e.deny, req); r != nil {
		d.Action, d.Policy, d.Rule, d.Reason = ActionDeny, r.policy, r.index, ReasonDenyRule
		why[0] = r
		return d, why
	}
	var allowed *rule
	switch {
	case e.allowRules:
		allowed = first(e.allow, req)
		if allowed == nil {
			d.Reason = ReasonNoAllowMatch
			return d, why
		}
		d.Allowed, d.Action, d.Policy, d.Rule, d.Reason = true, ActionAllow, allowed.policy, allowed.index, ReasonAllowRule
		why[0] = allowed
	default:
		d.Allowed, d.Reason = true, ReasonNoAllowRules
	}
	// Allowed. Would the dry-run policies deny it?
	if r := first(e.dryDeny, req); r != nil {
		d.DryRun, d.DryRunPolicy, d.DryRunRule = true, r.policy, r.index
		why[1] = r
	} else if allowed == nil && e.shadowAllow && first(e.dryAllow, req) == nil {
		d.DryRun = true
	}
	return d, why
}

// Explanation is a decision with what led to it, for people.
type Explanation struct {
	// Request is the request as decided, its path normalized.
	Request Request
	// PathError is set when pathnorm refused the path; the proxy answers
	// 400 before any rule is looked at, and Decision denies.
	PathError error
	Decision  Decision
	// Rule, DryRunRule and AuditRule describe the rules Decision names
	// ("" when none).
	Rule, DryRunRule, AuditRule string
}

// Explain decides a request the way the inbound proxy does, from a raw
// path: pathnorm.Normalize, then Check. It is the code path behind
// `meshctl authz explain`.
func (e *Engine) Explain(req Request) Explanation {
	x := Explanation{Request: req}
	p, err := pathnorm.Normalize(req.Path)
	if err != nil {
		x.PathError = err
		x.Decision = Decision{Rule: -1, DryRunRule: -1, AuditRule: -1, Reason: "path refused (400): " + err.Error()}
		return x
	}
	x.Request.Path = p
	var why [3]*rule
	x.Decision, why = e.check(&x.Request)
	if why[0] != nil {
		x.Rule = why[0].desc
	}
	if why[1] != nil {
		x.DryRunRule = why[1].desc
	}
	if why[2] != nil {
		x.AuditRule = why[2].desc
	}
	return x
}

// String renders the explanation in a few lines, for example:
//
//	DENY GET /admin/users from spiffe://minimesh.local/ns/prod/sa/web
//	  matched a deny rule: policy prod/admin rule 0: deny paths [prefix /admin]
func (x Explanation) String() string {
	var b strings.Builder
	verdict := "DENY"
	if x.Decision.Allowed {
		verdict = "ALLOW"
	}
	fmt.Fprintf(&b, "%s %s %s from %s\n", verdict, x.Request.Method, x.Request.Path, x.Request.Peer)
	d := x.Decision
	if d.Rule >= 0 {
		fmt.Fprintf(&b, "  %s: policy %s rule %d: %s\n", d.Reason, d.Policy, d.Rule, x.Rule)
	} else {
		fmt.Fprintf(&b, "  %s\n", d.Reason)
	}
	if d.DryRun {
		if d.DryRunRule >= 0 {
			fmt.Fprintf(&b, "  dry-run would deny: policy %s rule %d: %s\n", d.DryRunPolicy, d.DryRunRule, x.DryRunRule)
		} else {
			fmt.Fprintf(&b, "  dry-run would deny: %s\n", ReasonNoAllowMatch)
		}
	}
	if d.Audit {
		fmt.Fprintf(&b, "  audited: policy %s rule %d: %s\n", d.AuditPolicy, d.AuditRule, x.AuditRule)
	}
	return b.String()
}

// Service returns the service the policies are for ("" without policies).
func (e *Engine) Service() string {
	if e == nil {
		return ""
	}
	return e.service
}
