package api

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	meshv1 "minimesh/proto/mesh/v1"
)

// Limits and defaults that Validate enforces and that the data plane applies.
const (
	MaxNameLength = 63

	MaxServicePorts = 64
	MaxPatterns     = 64
	MaxSubsets      = 32

	MaxRouteMatches        = 32
	MaxHeaderMatches       = 16
	MaxMethods             = 16
	MaxBackends            = 16
	MaxWeight              = 10000
	MaxPathLength          = 1024
	MaxHeaderName          = 256
	MaxHeaderValue         = 1024
	MaxRouteTimeout        = time.Hour
	MaxRetryAttempts       = 10
	MaxRetryBodyBytes      = 1 << 20
	MaxMinRetriesPerSecond = 10000
	MaxRequestsPerSecond   = 1e6
	MaxBurst               = 1_000_000
	MaxOverrides           = 64
	MaxRules               = 64
	MaxAccessLogTTL        = 7 * 24 * time.Hour
	MaxConfigFileBytes     = 256 << 10
	MaxConfigFilePath      = 1024
	MaxPathSegment         = 255

	DefaultRetryBodyBytes      = 64 << 10
	DefaultRetryBudgetPercent  = 20.0
	DefaultMinRetriesPerSecond = 10
	DefaultConfigFileMode      = 0o644
)

// DefaultRetryOn returns the conditions retried when a RetryPolicy lists
// none.
func DefaultRetryOn() []meshv1.RetryOn {
	return []meshv1.RetryOn{meshv1.RetryOn_RETRY_ON_CONNECT_FAILURE, meshv1.RetryOn_RETRY_ON_RESET, meshv1.RetryOn_RETRY_ON_GATEWAY_ERROR}
}

// Burst returns the bucket size for a rate and a configured burst: burst,
// or when it is 0 the rate rounded up, at least 1.
func Burst(requestsPerSecond float64, burst uint32) int {
	if burst > 0 {
		return int(burst)
	}
	if !(requestsPerSecond > 0) {
		return 1
	}
	return max(1, int(math.Ceil(min(requestsPerSecond, MaxRequestsPerSecond))))
}

// BackendWeight returns a backend's weight: 1 when unset.
func BackendWeight(b *meshv1.RouteBackend) uint32 {
	if b.Weight == nil {
		return 1
	}
	return b.GetWeight()
}

var accessLogFields = []string{
	"time", "source_identity", "source_address", "method", "authority", "path",
	"protocol", "route", "status", "bytes_received", "bytes_sent", "duration_ms",
	"upstream", "retries", "user_agent", "request_id", "authz_decision",
	"response_flags",
}

var defaultAccessLogFields = []string{
	"time", "source_identity", "method", "path", "route", "status",
	"bytes_received", "bytes_sent", "duration_ms", "response_flags",
}

// AccessLogFields returns the fields an AccessLog may list.
func AccessLogFields() []string { return slices.Clone(accessLogFields) }

// DefaultAccessLogFields returns the fields logged when an AccessLog lists
// none.
func DefaultAccessLogFields() []string { return slices.Clone(defaultAccessLogFields) }

// checker collects the FieldErrors of one object.
type checker struct {
	key  Key
	errs []error
}

func newChecker(o Object) *checker {
	c := &checker{key: KeyOf(o)}
	m := o.Meta()
	c.label("metadata.name", m.Name, true)
	c.label("metadata.namespace", m.Namespace, true)
	return c
}

func (c *checker) addErr(field string, cause error, format string, args ...any) {
	if len(c.errs) == maxErrors {
		c.errs = append(c.errs, &FieldError{Kind: c.key.Kind, Namespace: c.key.Namespace, Name: c.key.Name,
			Reason: "too many errors; the rest are not shown"})
	}
	if len(c.errs) > maxErrors {
		return
	}
	c.errs = append(c.errs, &FieldError{Kind: c.key.Kind, Namespace: c.key.Namespace, Name: c.key.Name,
		Field: field, Reason: fmt.Sprintf(format, args...), Err: cause})
}

func (c *checker) addf(field, format string, args ...any) { c.addErr(field, nil, format, args...) }

func (c *checker) err() error { return errors.Join(c.errs...) }

func idx(field string, i int) string { return fmt.Sprintf("%s[%d]", field, i) }

// IsLabel reports whether s is a DNS label (RFC 1123: lower-case letters,
// digits and '-', not at either end, at most MaxNameLength), the form of
// every resource name.
func IsLabel(s string) bool {
	if s == "" || len(s) > MaxNameLength || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func (c *checker) label(field, s string, required bool) {
	switch {
	case s == "":
		if required {
			c.addf(field, "required")
		}
	case !IsLabel(s):
		c.addf(field, "%q is not a DNS label (at most %d lower-case letters, digits and '-', starting and ending with a letter or digit)", s, MaxNameLength)
	}
}

func (c *checker) count(field string, n, lo, hi int) {
	switch {
	case n < lo && lo == 1:
		c.addf(field, "at least one is required")
	case n < lo:
		c.addf(field, "at least %d are required", lo)
	case n > hi:
		c.addf(field, "at most %d are allowed, got %d", hi, n)
	}
}

func (c *checker) patterns(field string, list []string, lo, hi int) {
	c.count(field, len(list), lo, hi)
	seen := make(map[string]int, len(list))
	for i, s := range list {
		f := idx(field, i)
		if _, err := parseIdentityPattern(s); err != nil {
			c.addf(f, "invalid identity pattern: %v", err)
			continue
		}
		if j, dup := seen[s]; dup {
			c.addf(f, "duplicates %s", idx(field, j))
		}
		seen[s] = i
	}
}

func (c *checker) methods(field string, list []string) {
	c.count(field, len(list), 0, MaxMethods)
	seen := make(map[string]int, len(list))
	for i, m := range list {
		f := idx(field, i)
		if !isMethod(m) {
			c.addf(f, "%q is not an upper-case HTTP method such as GET", m)
			continue
		}
		if j, dup := seen[m]; dup {
			c.addf(f, "duplicates %s", idx(field, j))
		}
		seen[m] = i
	}
}

func isMethod(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// duration checks an optional duration and returns it (0 when unset).
func (c *checker) duration(field string, d *durationpb.Duration, hi time.Duration) time.Duration {
	if d == nil {
		return 0
	}
	if err := d.CheckValid(); err != nil {
		c.addf(field, "invalid duration: %v", err)
		return 0
	}
	v := d.AsDuration()
	switch {
	case v <= 0:
		c.addf(field, "must be positive, got %s", v)
		return 0
	case v > hi:
		c.addf(field, "must be at most %s, got %s", hi, v)
		return 0
	}
	return v
}

func (c *checker) rate(field string, rps float64) {
	if !(rps > 0 && rps <= MaxRequestsPerSecond) {
		c.addf(field, "must be greater than 0 and at most %.0f, got %g", MaxRequestsPerSecond, rps)
	}
}

func (c *checker) burst(field string, b uint32) {
	if b > MaxBurst {
		c.addf(field, "must be at most %d, got %d", MaxBurst, b)
	}
}

func (c *checker) enum(field string, ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) bool {
	switch {
	case n == 0:
		c.addf(field, "required; one of %s", enumChoices(ed))
		return false
	case ed.Values().ByNumber(n) == nil:
		c.addf(field, "unknown value %d; one of %s", n, enumChoices(ed))
		return false
	}
	return true
}

// hasControl reports bytes below 0x20 (but tab) and DEL.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

func (c *checker) httpPath(field, p string) {
	switch {
	case p == "":
		c.addf(field, "must not be empty")
	case p[0] != '/':
		c.addf(field, "%q must start with '/'", p)
	case len(p) > MaxPathLength:
		c.addf(field, "longer than %d bytes", MaxPathLength)
	case strings.ContainsAny(p, "?# ") || hasControl(p):
		c.addf(field, "%q must not contain '?', '#', spaces or control characters (paths are matched without the query)", p)
	}
}

// unknownFields reports fields the binary encoding carried that this
// version's protos do not know, such as those a newer meshctl sent: applying
// the rest would silently drop part of what was asked for.
func (c *checker) unknownFields(field string, m protoreflect.Message) {
	if raw := m.GetUnknown(); len(raw) > 0 {
		var nums []string
		for len(raw) > 0 {
			num, _, n := protowire.ConsumeField(raw)
			if n < 0 {
				break
			}
			nums = append(nums, strconv.Itoa(int(num)))
			raw = raw[n:]
		}
		c.addf(field, "has fields this version does not know (numbers %s)", strings.Join(nums, ", "))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true
		}
		name := field + "." + fd.JSONName()
		if fd.IsList() {
			for i := range v.List().Len() {
				c.unknownFields(idx(name, i), v.List().Get(i).Message())
			}
		} else {
			c.unknownFields(name, v.Message())
		}
		return true
	})
}

func (c *checker) regex(field, expr string) {
	if _, err := compileRegex(expr); err != nil {
		c.addf(field, "invalid regex: %v", err)
	}
}

// Validate checks the Service; see the comments in resources.proto.
func (o *Service) Validate() error {
	c := newChecker(o)
	s := o.Spec
	if s == nil {
		s = &meshv1.ServiceSpec{}
	}
	c.unknownFields("spec", s.ProtoReflect())
	c.count("spec.ports", len(s.GetPorts()), 1, MaxServicePorts)
	numbers := map[uint32]int{}
	names := map[string]int{}
	for i, p := range s.GetPorts() {
		f := idx("spec.ports", i)
		if p.GetPort() < 1 || p.GetPort() > 65535 {
			c.addf(f+".port", "must be between 1 and 65535, got %d", p.GetPort())
		} else if j, dup := numbers[p.GetPort()]; dup {
			c.addErr(f+".port", ErrConflict, "%d duplicates spec.ports[%d]", p.GetPort(), j)
		} else {
			numbers[p.GetPort()] = i
		}
		c.enum(f+".protocol", p.GetProtocol().Descriptor(), protoreflect.EnumNumber(p.GetProtocol()))
		if p.GetName() != "" {
			c.label(f+".name", p.GetName(), false)
			if j, dup := names[p.GetName()]; dup {
				c.addErr(f+".name", ErrConflict, "%q duplicates spec.ports[%d]", p.GetName(), j)
			}
			names[p.GetName()] = i
		}
	}
	c.patterns("spec.servingIdentities", s.GetServingIdentities(), 1, MaxPatterns)
	c.count("spec.subsets", len(s.GetSubsets()), 0, MaxSubsets)
	subsets := map[string]int{}
	for i, sub := range s.GetSubsets() {
		f := idx("spec.subsets", i)
		c.label(f+".name", sub.GetName(), true)
		if j, dup := subsets[sub.GetName()]; dup && sub.GetName() != "" {
			c.addErr(f+".name", ErrConflict, "%q duplicates spec.subsets[%d]", sub.GetName(), j)
		}
		subsets[sub.GetName()] = i
		c.patterns(f+".identities", sub.GetIdentities(), 1, MaxPatterns)
	}
	c.metrics(s.GetMetrics())
	return c.err()
}

// Validate checks the Route; see the comments in resources.proto.
func (o *Route) Validate() error {
	c := newChecker(o)
	s := o.Spec
	if s == nil {
		s = &meshv1.RouteSpec{}
	}
	c.unknownFields("spec", s.ProtoReflect())
	c.label("spec.service", s.GetService(), true)

	c.count("spec.matches", len(s.GetMatches()), 0, MaxRouteMatches)
	for i, m := range s.GetMatches() {
		f := idx("spec.matches", i)
		if p := m.GetPath(); p != nil {
			switch k := p.GetKind().(type) {
			case *meshv1.PathMatch_Exact:
				c.httpPath(f+".path.exact", k.Exact)
			case *meshv1.PathMatch_Prefix:
				c.httpPath(f+".path.prefix", k.Prefix)
			case *meshv1.PathMatch_Regex:
				c.regex(f+".path.regex", k.Regex)
			default:
				c.addf(f+".path", "one of exact, prefix or regex is required")
			}
		}
		c.count(f+".headers", len(m.GetHeaders()), 0, MaxHeaderMatches)
		for j, h := range m.GetHeaders() {
			c.headerMatch(idx(f+".headers", j), h)
		}
		c.methods(f+".methods", m.GetMethods())
	}

	c.count("spec.backends", len(s.GetBackends()), 1, MaxBackends)
	type backendKey struct {
		service, subset string
		port            uint32
	}
	seen := map[backendKey]int{}
	var total uint64
	for i, b := range s.GetBackends() {
		f := idx("spec.backends", i)
		c.label(f+".service", b.GetService(), true)
		c.label(f+".subset", b.GetSubset(), false)
		if b.GetPort() > 65535 {
			c.addf(f+".port", "must be at most 65535, got %d", b.GetPort())
		}
		if w := BackendWeight(b); w > MaxWeight {
			c.addf(f+".weight", "must be at most %d, got %d", MaxWeight, w)
		} else {
			total += uint64(w)
		}
		k := backendKey{b.GetService(), b.GetSubset(), b.GetPort()}
		if j, dup := seen[k]; dup {
			c.addErr(f, ErrConflict, "duplicates spec.backends[%d]", j)
		}
		seen[k] = i
	}
	if len(s.GetBackends()) > 0 && total == 0 {
		c.addf("spec.backends", "the weights must not all be 0")
	}

	timeout := c.duration("spec.timeout", s.GetTimeout(), MaxRouteTimeout)
	if r := s.GetRetries(); r != nil {
		if r.GetAttempts() > MaxRetryAttempts {
			c.addf("spec.retries.attempts", "must be between 0 and %d, got %d", MaxRetryAttempts, r.GetAttempts())
		}
		perTry := c.duration("spec.retries.perTryTimeout", r.GetPerTryTimeout(), MaxRouteTimeout)
		if timeout > 0 && perTry > timeout {
			c.addf("spec.retries.perTryTimeout", "%s must not exceed spec.timeout (%s)", perTry, timeout)
		}
		ed := meshv1.RetryOn(0).Descriptor()
		seenOn := map[meshv1.RetryOn]int{}
		for i, on := range r.GetRetryOn() {
			f := idx("spec.retries.retryOn", i)
			if !c.enum(f, ed, protoreflect.EnumNumber(on)) {
				continue
			}
			if j, dup := seenOn[on]; dup {
				c.addf(f, "%q duplicates spec.retries.retryOn[%d]", enumShortName(ed, protoreflect.EnumNumber(on)), j)
			}
			seenOn[on] = i
		}
		if b := r.GetBudget(); b != nil {
			if p := b.GetPercent(); !(p > 0 && p <= 100) {
				c.addf("spec.retries.budget.percent", "must be greater than 0 and at most 100, got %g", p)
			}
			if m := b.GetMinRetriesPerSecond(); m > MaxMinRetriesPerSecond {
				c.addf("spec.retries.budget.minRetriesPerSecond", "must be at most %d, got %d", MaxMinRetriesPerSecond, m)
			}
		}
		if n := r.GetMaxBodyBytes(); n > MaxRetryBodyBytes {
			c.addf("spec.retries.maxBodyBytes", "must be at most %d, got %d", MaxRetryBodyBytes, n)
		}
	}
	return c.err()
}

func (c *checker) headerMatch(f string, h *meshv1.HeaderMatch) {
	switch n := h.GetName(); {
	case n == "":
		c.addf(f+".name", "required")
	case len(n) > MaxHeaderName:
		c.addf(f+".name", "longer than %d bytes", MaxHeaderName)
	case !isToken(n):
		c.addf(f+".name", "%q is not an HTTP header name", n)
	}
	value := func(field, v string) {
		switch {
		case len(v) > MaxHeaderValue:
			c.addf(field, "longer than %d bytes", MaxHeaderValue)
		case hasControl(v):
			c.addf(field, "must not contain control characters")
		}
	}
	switch m := h.GetMatch().(type) {
	case *meshv1.HeaderMatch_Exact:
		value(f+".exact", m.Exact)
	case *meshv1.HeaderMatch_Prefix:
		value(f+".prefix", m.Prefix)
	case *meshv1.HeaderMatch_Regex:
		c.regex(f+".regex", m.Regex)
	case *meshv1.HeaderMatch_Present:
	default:
		c.addf(f, "one of exact, prefix, regex or present is required")
	}
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

// Validate checks the RateLimit; see the comments in resources.proto.
func (o *RateLimit) Validate() error {
	c := newChecker(o)
	s := o.Spec
	if s == nil {
		s = &meshv1.RateLimitSpec{}
	}
	c.unknownFields("spec", s.ProtoReflect())
	c.label("spec.service", s.GetService(), true)
	c.label("spec.route", s.GetRoute(), false)
	c.rate("spec.requestsPerSecond", s.GetRequestsPerSecond())
	c.burst("spec.burst", s.GetBurst())
	c.count("spec.overrides", len(s.GetOverrides()), 0, MaxOverrides)
	seen := map[string]int{}
	for i, ov := range s.GetOverrides() {
		f := idx("spec.overrides", i)
		if _, err := parseIdentityPattern(ov.GetIdentity()); err != nil {
			c.addf(f+".identity", "invalid identity pattern: %v", err)
		} else if j, dup := seen[ov.GetIdentity()]; dup {
			c.addErr(f+".identity", ErrConflict, "duplicates spec.overrides[%d]", j)
		}
		seen[ov.GetIdentity()] = i
		c.rate(f+".requestsPerSecond", ov.GetRequestsPerSecond())
		c.burst(f+".burst", ov.GetBurst())
	}
	return c.err()
}

// Validate checks the AccessLog; see the comments in resources.proto.
func (o *AccessLog) Validate() error {
	c := newChecker(o)
	s := o.Spec
	if s == nil {
		s = &meshv1.AccessLogSpec{}
	}
	c.unknownFields("spec", s.ProtoReflect())
	c.label("spec.service", s.GetService(), true)
	seen := map[string]int{}
	for i, name := range s.GetFields() {
		f := idx("spec.fields", i)
		if !slices.Contains(accessLogFields, name) {
			c.addf(f, "unknown field %q; one of %s", name, strings.Join(accessLogFields, ", "))
			continue
		}
		if j, dup := seen[name]; dup {
			c.addf(f, "%q duplicates spec.fields[%d]", name, j)
		}
		seen[name] = i
	}
	if s.SampleRatio != nil {
		if r := s.GetSampleRatio(); !(r >= 0 && r <= 1) {
			c.addf("spec.sampleRatio", "must be between 0 and 1, got %g", r)
		}
	}
	c.duration("spec.ttl", s.GetTtl(), MaxAccessLogTTL)
	return c.err()
}

// Validate checks the AuthorizationPolicy; see the comments in
// resources.proto.
func (o *AuthorizationPolicy) Validate() error {
	c := newChecker(o)
	s := o.Spec
	if s == nil {
		s = &meshv1.AuthorizationPolicySpec{}
	}
	c.unknownFields("spec", s.ProtoReflect())
	c.label("spec.service", s.GetService(), true)
	c.count("spec.rules", len(s.GetRules()), 1, MaxRules)
	ed := meshv1.AuthorizationAction(0).Descriptor()
	for i, r := range s.GetRules() {
		f := idx("spec.rules", i)
		c.enum(f+".action", ed, protoreflect.EnumNumber(r.GetAction()))
		c.patterns(f+".from", r.GetFrom(), 0, MaxPatterns)
		c.count(f+".paths", len(r.GetPaths()), 0, MaxPatterns)
		for j, p := range r.GetPaths() {
			pf := idx(f+".paths", j)
			switch k := p.GetKind().(type) {
			case *meshv1.AuthorizationPath_Exact:
				c.httpPath(pf+".exact", k.Exact)
			case *meshv1.AuthorizationPath_Prefix:
				c.httpPath(pf+".prefix", k.Prefix)
			default:
				c.addf(pf, "one of exact or prefix is required")
			}
		}
		c.methods(f+".methods", r.GetMethods())
	}
	return c.err()
}

// Validate checks the ConfigFile; see the comments in resources.proto.
func (o *ConfigFile) Validate() error {
	c := newChecker(o)
	s := o.Spec
	if s == nil {
		s = &meshv1.ConfigFileSpec{}
	}
	c.unknownFields("spec", s.ProtoReflect())
	c.label("spec.service", s.GetService(), true)
	if err := checkRelativePath(s.GetPath()); err != nil {
		c.addf("spec.path", "%v", err)
	} else if first, _, _ := strings.Cut(s.GetPath(), "/"); first == LogsDir {
		c.addf("spec.path", "%q is under %s/, which is the app's log directory (LogAdapter)", s.GetPath(), LogsDir)
	}
	if m := s.GetMode(); m > 0o777 {
		c.addf("spec.mode", "%#o has bits beyond 0777", m)
	} else if m&0o002 != 0 {
		c.addf("spec.mode", "%#o is writable by others", m)
	}
	if n := len(s.GetContent()); n > MaxConfigFileBytes {
		c.addf("spec.content", "%d bytes, at most %d", n, MaxConfigFileBytes)
	} else if !utf8.ValidString(s.GetContent()) {
		c.addf("spec.content", "must be UTF-8 text")
	}
	return c.err()
}

// checkRelativePath enforces ConfigFileSpec.path's rules.
func checkRelativePath(p string) error {
	switch {
	case p == "":
		return errors.New("required")
	case len(p) > MaxConfigFilePath:
		return fmt.Errorf("longer than %d bytes", MaxConfigFilePath)
	case p[0] == '/':
		return fmt.Errorf("%q must be relative", p)
	case strings.ContainsRune(p, '\\'):
		return fmt.Errorf("%q must not contain '\\'", p)
	case hasControl(p) || strings.ContainsRune(p, '\t'):
		return fmt.Errorf("%q must not contain control characters", p)
	case !utf8.ValidString(p):
		return fmt.Errorf("%q must be UTF-8", p)
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%q has an empty segment", p)
		case seg == "." || seg == "..":
			return fmt.Errorf("%q has a %q segment", p, seg)
		case len(seg) > MaxPathSegment:
			return fmt.Errorf("%q has a segment longer than %d bytes", p, MaxPathSegment)
		}
	}
	return nil
}
