package api_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// base returns a fresh copy of the full, valid example of kind.
func base(t testing.TB, kind api.Kind) api.Object {
	t.Helper()
	return api.Clone(decodeFile(t, kindFiles[kind])[0].Object)
}

func TestExamplesAreValid(t *testing.T) {
	for _, kind := range api.Kinds() {
		if err := base(t, kind).Validate(); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
}

func repeat[T any](n int, f func(i int) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func svc(o api.Object) *meshv1.ServiceSpec               { return o.(*api.Service).Spec }
func route(o api.Object) *meshv1.RouteSpec               { return o.(*api.Route).Spec }
func rl(o api.Object) *meshv1.RateLimitSpec              { return o.(*api.RateLimit).Spec }
func alog(o api.Object) *meshv1.AccessLogSpec            { return o.(*api.AccessLog).Spec }
func authz(o api.Object) *meshv1.AuthorizationPolicySpec { return o.(*api.AuthorizationPolicy).Spec }
func cfile(o api.Object) *meshv1.ConfigFileSpec          { return o.(*api.ConfigFile).Spec }
func ext(o api.Object) *meshv1.ExternalServiceSpec       { return o.(*api.ExternalService).Spec }
func ladapt(o api.Object) *meshv1.LogAdapterSpec         { return o.(*api.LogAdapter).Spec }
func lship(o api.Object) *meshv1.LogShippingSpec         { return o.(*api.LogShipping).Spec }

// TestValidateErrors: every rule, broken alone on an otherwise valid
// object, gives exactly one error naming its field and the reason.
func TestValidateErrors(t *testing.T) {
	type tc struct {
		name   string
		kind   api.Kind
		mutate func(o api.Object)
		field  string
		reason string
	}
	long := strings.Repeat("a", 64)
	tests := []tc{
		// metadata, on every kind
		{"name required", api.KindRoute, func(o api.Object) { o.Meta().Name = "" }, "metadata.name", "required"},
		{"name upper case", api.KindService, func(o api.Object) { o.Meta().Name = "Web" }, "metadata.name", `"Web" is not a DNS label`},
		{"name too long", api.KindRateLimit, func(o api.Object) { o.Meta().Name = long }, "metadata.name", "is not a DNS label"},
		{"name ends with dash", api.KindAccessLog, func(o api.Object) { o.Meta().Name = "a-" }, "metadata.name", "is not a DNS label"},
		{"namespace required", api.KindAuthorizationPolicy, func(o api.Object) { o.Meta().Namespace = "" }, "metadata.namespace", "required"},
		{"namespace underscore", api.KindConfigFile, func(o api.Object) { o.Meta().Namespace = "a_b" }, "metadata.namespace", "is not a DNS label"},

		// Service
		{"no ports", api.KindService, func(o api.Object) { svc(o).Ports = nil }, "spec.ports", "at least one is required"},
		{"too many ports", api.KindService, func(o api.Object) {
			svc(o).Ports = repeat(65, func(i int) *meshv1.ServicePort {
				return &meshv1.ServicePort{Port: uint32(i + 1), Protocol: meshv1.Protocol_PROTOCOL_TCP}
			})
		}, "spec.ports", "at most 64 are allowed, got 65"},
		{"port 0", api.KindService, func(o api.Object) { svc(o).Ports[0].Port = 0 }, "spec.ports[0].port", "must be between 1 and 65535, got 0"},
		{"port too large", api.KindService, func(o api.Object) { svc(o).Ports[1].Port = 65536 }, "spec.ports[1].port", "must be between 1 and 65535, got 65536"},
		{"duplicate port", api.KindService, func(o api.Object) { svc(o).Ports[2].Port = 8080 }, "spec.ports[2].port", "8080 duplicates spec.ports[0]"},
		{"protocol required", api.KindService, func(o api.Object) { svc(o).Ports[0].Protocol = 0 }, "spec.ports[0].protocol", "required; one of http, http2, grpc, tcp"},
		{"protocol unknown", api.KindService, func(o api.Object) { svc(o).Ports[0].Protocol = 99 }, "spec.ports[0].protocol", "unknown value 99"},
		{"port name", api.KindService, func(o api.Object) { svc(o).Ports[0].Name = "HTTP" }, "spec.ports[0].name", "is not a DNS label"},
		{"duplicate port name", api.KindService, func(o api.Object) { svc(o).Ports[1].Name = "http" }, "spec.ports[1].name", `"http" duplicates spec.ports[0]`},
		{"no serving identities", api.KindService, func(o api.Object) { svc(o).ServingIdentities = nil }, "spec.servingIdentities", "at least one is required"},
		{"too many serving identities", api.KindService, func(o api.Object) {
			svc(o).ServingIdentities = repeat(65, func(i int) string { return "spiffe://td/sa/" + strings.Repeat("a", i+1) })
		}, "spec.servingIdentities", "at most 64"},
		{"bad serving identity", api.KindService, func(o api.Object) { svc(o).ServingIdentities[1] = "spiffe://*/ns" }, "spec.servingIdentities[1]", "invalid identity pattern"},
		{"duplicate serving identity", api.KindService, func(o api.Object) { svc(o).ServingIdentities[1] = svc(o).ServingIdentities[0] }, "spec.servingIdentities[1]", "duplicates spec.servingIdentities[0]"},
		{"too many subsets", api.KindService, func(o api.Object) {
			svc(o).Subsets = repeat(33, func(i int) *meshv1.ServiceSubset {
				return &meshv1.ServiceSubset{Name: "s" + strings.Repeat("x", i), Identities: []string{"*"}}
			})
		}, "spec.subsets", "at most 32"},
		{"subset name required", api.KindService, func(o api.Object) { svc(o).Subsets[0].Name = "" }, "spec.subsets[0].name", "required"},
		{"duplicate subset", api.KindService, func(o api.Object) {
			svc(o).Subsets = append(svc(o).Subsets, &meshv1.ServiceSubset{Name: "canary", Identities: []string{"*"}})
		}, "spec.subsets[1].name", `"canary" duplicates spec.subsets[0]`},
		{"subset without identities", api.KindService, func(o api.Object) { svc(o).Subsets[0].Identities = nil }, "spec.subsets[0].identities", "at least one is required"},
		{"bad subset identity", api.KindService, func(o api.Object) { svc(o).Subsets[0].Identities[0] = "web" }, "spec.subsets[0].identities[0]", `must be "*" or start with "spiffe://"`},

		// Route
		{"route service required", api.KindRoute, func(o api.Object) { route(o).Service = "" }, "spec.service", "required"},
		{"route service name", api.KindRoute, func(o api.Object) { route(o).Service = "web.prod" }, "spec.service", "is not a DNS label"},
		{"too many matches", api.KindRoute, func(o api.Object) {
			route(o).Matches = repeat(33, func(int) *meshv1.RouteMatch { return &meshv1.RouteMatch{} })
		}, "spec.matches", "at most 32"},
		{"empty path match", api.KindRoute, func(o api.Object) { route(o).Matches[0].Path = &meshv1.PathMatch{} }, "spec.matches[0].path", "one of exact, prefix or regex is required"},
		{"path without slash", api.KindRoute, func(o api.Object) {
			route(o).Matches[1].Path.Kind = &meshv1.PathMatch_Exact{Exact: "healthz"}
		}, "spec.matches[1].path.exact", `"healthz" must start with '/'`},
		{"empty prefix", api.KindRoute, func(o api.Object) {
			route(o).Matches[0].Path.Kind = &meshv1.PathMatch_Prefix{Prefix: ""}
		}, "spec.matches[0].path.prefix", "must not be empty"},
		{"path with query", api.KindRoute, func(o api.Object) {
			route(o).Matches[1].Path.Kind = &meshv1.PathMatch_Exact{Exact: "/a?b=c"}
		}, "spec.matches[1].path.exact", "must not contain '?'"},
		{"path with control character", api.KindRoute, func(o api.Object) {
			route(o).Matches[1].Path.Kind = &meshv1.PathMatch_Exact{Exact: "/a\nb"}
		}, "spec.matches[1].path.exact", "control characters"},
		{"path too long", api.KindRoute, func(o api.Object) {
			route(o).Matches[0].Path.Kind = &meshv1.PathMatch_Prefix{Prefix: "/" + strings.Repeat("a", 1024)}
		}, "spec.matches[0].path.prefix", "longer than 1024 bytes"},
		{"bad path regex", api.KindRoute, func(o api.Object) {
			route(o).Matches[2].Path.Kind = &meshv1.PathMatch_Regex{Regex: "/(a"}
		}, "spec.matches[2].path.regex", "invalid regex: error parsing regexp: missing closing )"},
		{"regex that would escape its anchors", api.KindRoute, func(o api.Object) {
			route(o).Matches[2].Path.Kind = &meshv1.PathMatch_Regex{Regex: "/a)|(.*"}
		}, "spec.matches[2].path.regex", "invalid regex"},
		{"backreference", api.KindRoute, func(o api.Object) {
			route(o).Matches[2].Path.Kind = &meshv1.PathMatch_Regex{Regex: `/(a)\1`}
		}, "spec.matches[2].path.regex", "invalid regex"},
		{"regex too long", api.KindRoute, func(o api.Object) {
			route(o).Matches[2].Path.Kind = &meshv1.PathMatch_Regex{Regex: strings.Repeat("a", 1025)}
		}, "spec.matches[2].path.regex", "longer than 1024 bytes"},
		{"regex too complex", api.KindRoute, func(o api.Object) {
			route(o).Matches[2].Path.Kind = &meshv1.PathMatch_Regex{Regex: strings.Repeat("[a-z]{1000}", 5)}
		}, "spec.matches[2].path.regex", "too complex"},
		{"too many headers", api.KindRoute, func(o api.Object) {
			route(o).Matches[0].Headers = repeat(17, func(int) *meshv1.HeaderMatch {
				return &meshv1.HeaderMatch{Name: "x", Match: &meshv1.HeaderMatch_Present{Present: true}}
			})
		}, "spec.matches[0].headers", "at most 16"},
		{"header name required", api.KindRoute, func(o api.Object) { route(o).Matches[0].Headers[0].Name = "" }, "spec.matches[0].headers[0].name", "required"},
		{"header name with space", api.KindRoute, func(o api.Object) { route(o).Matches[0].Headers[1].Name = "x debug" }, "spec.matches[0].headers[1].name", `"x debug" is not an HTTP header name`},
		{"pseudo-header", api.KindRoute, func(o api.Object) { route(o).Matches[0].Headers[1].Name = ":path" }, "spec.matches[0].headers[1].name", "is not an HTTP header name"},
		{"header name too long", api.KindRoute, func(o api.Object) { route(o).Matches[0].Headers[1].Name = strings.Repeat("x", 257) }, "spec.matches[0].headers[1].name", "longer than 256 bytes"},
		{"header without match", api.KindRoute, func(o api.Object) { route(o).Matches[0].Headers[0].Match = nil }, "spec.matches[0].headers[0]", "one of exact, prefix, regex or present is required"},
		{"header value too long", api.KindRoute, func(o api.Object) {
			route(o).Matches[2].Headers[1].Match = &meshv1.HeaderMatch_Exact{Exact: strings.Repeat("v", 1025)}
		}, "spec.matches[2].headers[1].exact", "longer than 1024 bytes"},
		{"header value with newline", api.KindRoute, func(o api.Object) {
			route(o).Matches[2].Headers[0].Match = &meshv1.HeaderMatch_Prefix{Prefix: "a\r\nb"}
		}, "spec.matches[2].headers[0].prefix", "control characters"},
		{"bad header regex", api.KindRoute, func(o api.Object) {
			route(o).Matches[0].Headers[0].Match = &meshv1.HeaderMatch_Regex{Regex: "a**"}
		}, "spec.matches[0].headers[0].regex", "invalid regex"},
		{"method in lower case", api.KindRoute, func(o api.Object) { route(o).Matches[0].Methods[1] = "head" }, "spec.matches[0].methods[1]", `"head" is not an upper-case HTTP method`},
		{"duplicate method", api.KindRoute, func(o api.Object) { route(o).Matches[0].Methods[1] = "GET" }, "spec.matches[0].methods[1]", "duplicates spec.matches[0].methods[0]"},
		{"too many methods", api.KindRoute, func(o api.Object) {
			route(o).Matches[0].Methods = repeat(17, func(i int) string { return "M" + strings.Repeat("X", i) })
		}, "spec.matches[0].methods", "at most 16"},
		{"no backends", api.KindRoute, func(o api.Object) { route(o).Backends = nil }, "spec.backends", "at least one is required"},
		{"too many backends", api.KindRoute, func(o api.Object) {
			route(o).Backends = repeat(17, func(i int) *meshv1.RouteBackend { return &meshv1.RouteBackend{Service: "web", Port: uint32(i + 1)} })
		}, "spec.backends", "at most 16"},
		{"backend service required", api.KindRoute, func(o api.Object) { route(o).Backends[0].Service = "" }, "spec.backends[0].service", "required"},
		{"backend subset name", api.KindRoute, func(o api.Object) { route(o).Backends[1].Subset = "Canary" }, "spec.backends[1].subset", "is not a DNS label"},
		{"backend port", api.KindRoute, func(o api.Object) { route(o).Backends[0].Port = 65536 }, "spec.backends[0].port", "must be at most 65535"},
		{"weight too large", api.KindRoute, func(o api.Object) { route(o).Backends[0].Weight = proto.Uint32(10001) }, "spec.backends[0].weight", "must be at most 10000, got 10001"},
		{"duplicate backend", api.KindRoute, func(o api.Object) { route(o).Backends[2].Port = 0 }, "spec.backends[2]", "duplicates spec.backends[1]"},
		{"all weights 0", api.KindRoute, func(o api.Object) {
			for _, b := range route(o).Backends {
				b.Weight = proto.Uint32(0)
			}
		}, "spec.backends", "the weights must not all be 0"},
		{"negative timeout", api.KindRoute, func(o api.Object) {
			route(o).Timeout = dur(-time.Second)
			route(o).Retries.PerTryTimeout = nil
		}, "spec.timeout", "must be positive, got -1s"},
		{"zero timeout", api.KindRoute, func(o api.Object) { route(o).Timeout = dur(0) }, "spec.timeout", "must be positive, got 0s"},
		{"timeout too long", api.KindRoute, func(o api.Object) { route(o).Timeout = dur(61 * time.Minute) }, "spec.timeout", "must be at most 1h0m0s, got 1h1m0s"},
		{"malformed duration", api.KindRoute, func(o api.Object) { route(o).Timeout = &durationpb.Duration{Seconds: 1, Nanos: -1} }, "spec.timeout", "invalid duration"},
		{"too many attempts", api.KindRoute, func(o api.Object) { route(o).Retries.Attempts = 11 }, "spec.retries.attempts", "must be between 0 and 10, got 11"},
		{"per-try timeout over timeout", api.KindRoute, func(o api.Object) { route(o).Retries.PerTryTimeout = dur(3 * time.Second) }, "spec.retries.perTryTimeout", "3s must not exceed spec.timeout (2.5s)"},
		{"per-try timeout zero", api.KindRoute, func(o api.Object) { route(o).Retries.PerTryTimeout = dur(0) }, "spec.retries.perTryTimeout", "must be positive"},
		{"retryOn unset value", api.KindRoute, func(o api.Object) { route(o).Retries.RetryOn[2] = 0 }, "spec.retries.retryOn[2]", "required; one of 5xx, gateway-error, reset, connect-failure, retriable-4xx"},
		{"retryOn unknown value", api.KindRoute, func(o api.Object) { route(o).Retries.RetryOn[0] = 42 }, "spec.retries.retryOn[0]", "unknown value 42"},
		{"retryOn duplicate", api.KindRoute, func(o api.Object) { route(o).Retries.RetryOn[4] = meshv1.RetryOn_RETRY_ON_RESET }, "spec.retries.retryOn[4]", `"reset" duplicates spec.retries.retryOn[2]`},
		{"budget percent 0", api.KindRoute, func(o api.Object) { route(o).Retries.Budget.Percent = 0 }, "spec.retries.budget.percent", "must be greater than 0 and at most 100, got 0"},
		{"budget percent NaN", api.KindRoute, func(o api.Object) { route(o).Retries.Budget.Percent = math.NaN() }, "spec.retries.budget.percent", "got NaN"},
		{"budget percent over 100", api.KindRoute, func(o api.Object) { route(o).Retries.Budget.Percent = 100.5 }, "spec.retries.budget.percent", "got 100.5"},
		{"budget min retries", api.KindRoute, func(o api.Object) { route(o).Retries.Budget.MinRetriesPerSecond = 10001 }, "spec.retries.budget.minRetriesPerSecond", "must be at most 10000"},
		{"retry body too large", api.KindRoute, func(o api.Object) { route(o).Retries.MaxBodyBytes = 1<<20 + 1 }, "spec.retries.maxBodyBytes", "must be at most 1048576"},

		{"unknown wire field", api.KindRoute, func(o api.Object) {
			b := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)
			route(o).Matches[1].ProtoReflect().SetUnknown(b)
		}, "spec.matches[1]", "has fields this version does not know (numbers 99)"},

		// RateLimit
		{"rate limit service required", api.KindRateLimit, func(o api.Object) { rl(o).Service = "" }, "spec.service", "required"},
		{"rate limit route name", api.KindRateLimit, func(o api.Object) { rl(o).Route = "API" }, "spec.route", "is not a DNS label"},
		{"rate 0", api.KindRateLimit, func(o api.Object) { rl(o).RequestsPerSecond = 0 }, "spec.requestsPerSecond", "must be greater than 0 and at most 1000000, got 0"},
		{"rate negative", api.KindRateLimit, func(o api.Object) { rl(o).RequestsPerSecond = -1 }, "spec.requestsPerSecond", "got -1"},
		{"rate NaN", api.KindRateLimit, func(o api.Object) { rl(o).RequestsPerSecond = math.NaN() }, "spec.requestsPerSecond", "got NaN"},
		{"rate infinite", api.KindRateLimit, func(o api.Object) { rl(o).RequestsPerSecond = math.Inf(1) }, "spec.requestsPerSecond", "got +Inf"},
		{"rate too high", api.KindRateLimit, func(o api.Object) { rl(o).RequestsPerSecond = 1e6 + 1 }, "spec.requestsPerSecond", "at most 1000000"},
		{"burst too high", api.KindRateLimit, func(o api.Object) { rl(o).Burst = 1_000_001 }, "spec.burst", "must be at most 1000000, got 1000001"},
		{"too many overrides", api.KindRateLimit, func(o api.Object) {
			rl(o).Overrides = repeat(65, func(i int) *meshv1.RateLimitOverride {
				return &meshv1.RateLimitOverride{Identity: "spiffe://td/" + strings.Repeat("a", i+1), RequestsPerSecond: 1}
			})
		}, "spec.overrides", "at most 64"},
		{"override identity required", api.KindRateLimit, func(o api.Object) { rl(o).Overrides[0].Identity = "" }, "spec.overrides[0].identity", "invalid identity pattern: must not be empty"},
		{"override identity glob in trust domain", api.KindRateLimit, func(o api.Object) { rl(o).Overrides[1].Identity = "spiffe://*.local/ns" }, "spec.overrides[1].identity", "the trust domain may not hold '*'"},
		{"duplicate override", api.KindRateLimit, func(o api.Object) { rl(o).Overrides[1].Identity = rl(o).Overrides[0].Identity }, "spec.overrides[1].identity", "duplicates spec.overrides[0]"},
		{"override rate 0", api.KindRateLimit, func(o api.Object) { rl(o).Overrides[1].RequestsPerSecond = 0 }, "spec.overrides[1].requestsPerSecond", "must be greater than 0"},
		{"override burst", api.KindRateLimit, func(o api.Object) { rl(o).Overrides[0].Burst = 2_000_000 }, "spec.overrides[0].burst", "must be at most 1000000"},

		// AccessLog
		{"access log service required", api.KindAccessLog, func(o api.Object) { alog(o).Service = "" }, "spec.service", "required"},
		{"unknown log field", api.KindAccessLog, func(o api.Object) { alog(o).Fields[2] = "cookie" }, "spec.fields[2]", `unknown field "cookie"; one of time, source_identity`},
		{"duplicate log field", api.KindAccessLog, func(o api.Object) { alog(o).Fields[3] = "time" }, "spec.fields[3]", `"time" duplicates spec.fields[0]`},
		{"sample ratio negative", api.KindAccessLog, func(o api.Object) { alog(o).SampleRatio = proto.Float64(-0.1) }, "spec.sampleRatio", "must be between 0 and 1, got -0.1"},
		{"sample ratio over 1", api.KindAccessLog, func(o api.Object) { alog(o).SampleRatio = proto.Float64(1.5) }, "spec.sampleRatio", "got 1.5"},
		{"sample ratio NaN", api.KindAccessLog, func(o api.Object) { alog(o).SampleRatio = proto.Float64(math.NaN()) }, "spec.sampleRatio", "got NaN"},
		{"ttl zero", api.KindAccessLog, func(o api.Object) { alog(o).Ttl = dur(0) }, "spec.ttl", "must be positive"},
		{"ttl too long", api.KindAccessLog, func(o api.Object) { alog(o).Ttl = dur(8 * 24 * time.Hour) }, "spec.ttl", "must be at most 168h0m0s, got 192h0m0s"},

		// AuthorizationPolicy
		{"policy service required", api.KindAuthorizationPolicy, func(o api.Object) { authz(o).Service = "" }, "spec.service", "required"},
		{"no rules", api.KindAuthorizationPolicy, func(o api.Object) { authz(o).Rules = nil }, "spec.rules", "at least one is required"},
		{"too many rules", api.KindAuthorizationPolicy, func(o api.Object) {
			authz(o).Rules = repeat(65, func(int) *meshv1.AuthorizationRule {
				return &meshv1.AuthorizationRule{Action: meshv1.AuthorizationAction_AUTHORIZATION_ACTION_DENY}
			})
		}, "spec.rules", "at most 64"},
		{"action required", api.KindAuthorizationPolicy, func(o api.Object) { authz(o).Rules[1].Action = 0 }, "spec.rules[1].action", "required; one of allow, deny, audit"},
		{"action unknown", api.KindAuthorizationPolicy, func(o api.Object) { authz(o).Rules[0].Action = 7 }, "spec.rules[0].action", "unknown value 7"},
		{"bad from", api.KindAuthorizationPolicy, func(o api.Object) { authz(o).Rules[1].From[0] = "spiffe://minimesh.local/ns/**/sa/web" }, "spec.rules[1].from[0]", `"**" may only be the last segment`},
		{"duplicate from", api.KindAuthorizationPolicy, func(o api.Object) { authz(o).Rules[1].From[1] = authz(o).Rules[1].From[0] }, "spec.rules[1].from[1]", "duplicates spec.rules[1].from[0]"},
		{"too many from", api.KindAuthorizationPolicy, func(o api.Object) {
			authz(o).Rules[2].From = repeat(65, func(i int) string { return "spiffe://td/" + strings.Repeat("a", i+1) })
		}, "spec.rules[2].from", "at most 64"},
		{"path without kind", api.KindAuthorizationPolicy, func(o api.Object) { authz(o).Rules[0].Paths[0].Kind = nil }, "spec.rules[0].paths[0]", "one of exact or prefix is required"},
		{"relative path", api.KindAuthorizationPolicy, func(o api.Object) {
			authz(o).Rules[1].Paths[1].Kind = &meshv1.AuthorizationPath_Exact{Exact: "healthz"}
		}, "spec.rules[1].paths[1].exact", "must start with '/'"},
		{"too many paths", api.KindAuthorizationPolicy, func(o api.Object) {
			authz(o).Rules[0].Paths = repeat(65, func(int) *meshv1.AuthorizationPath {
				return &meshv1.AuthorizationPath{Kind: &meshv1.AuthorizationPath_Prefix{Prefix: "/"}}
			})
		}, "spec.rules[0].paths", "at most 64"},
		{"policy method", api.KindAuthorizationPolicy, func(o api.Object) { authz(o).Rules[1].Methods[0] = "Get" }, "spec.rules[1].methods[0]", "is not an upper-case HTTP method"},

		// ConfigFile
		{"config file service required", api.KindConfigFile, func(o api.Object) { cfile(o).Service = "" }, "spec.service", "required"},
		{"path required", api.KindConfigFile, func(o api.Object) { cfile(o).Path = "" }, "spec.path", "required"},
		{"absolute path", api.KindConfigFile, func(o api.Object) { cfile(o).Path = "/etc/passwd" }, "spec.path", "must be relative"},
		{"dot-dot", api.KindConfigFile, func(o api.Object) { cfile(o).Path = "conf.d/../../x" }, "spec.path", `has a ".." segment`},
		{"dot", api.KindConfigFile, func(o api.Object) { cfile(o).Path = "./x" }, "spec.path", `has a "." segment`},
		{"empty segment", api.KindConfigFile, func(o api.Object) { cfile(o).Path = "a//b" }, "spec.path", "has an empty segment"},
		{"trailing slash", api.KindConfigFile, func(o api.Object) { cfile(o).Path = "a/" }, "spec.path", "has an empty segment"},
		{"backslash", api.KindConfigFile, func(o api.Object) { cfile(o).Path = `..\x` }, "spec.path", `must not contain '\'`},
		{"control character", api.KindConfigFile, func(o api.Object) { cfile(o).Path = "a\x00b" }, "spec.path", "control characters"},
		{"path too long", api.KindConfigFile, func(o api.Object) { cfile(o).Path = strings.Repeat("a/", 512) + "b" }, "spec.path", "longer than 1024 bytes"},
		{"segment too long", api.KindConfigFile, func(o api.Object) { cfile(o).Path = strings.Repeat("a", 256) }, "spec.path", "segment longer than 255 bytes"},
		{"path not UTF-8", api.KindConfigFile, func(o api.Object) { cfile(o).Path = "a\xffb" }, "spec.path", "must be UTF-8"},
		{"setuid mode", api.KindConfigFile, func(o api.Object) { cfile(o).Mode = 0o4755 }, "spec.mode", "04755 has bits beyond 0777"},
		{"world-writable mode", api.KindConfigFile, func(o api.Object) { cfile(o).Mode = 0o666 }, "spec.mode", "0666 is writable by others"},
		{"content too large", api.KindConfigFile, func(o api.Object) { cfile(o).Content = strings.Repeat("x", 256<<10+1) }, "spec.content", "262145 bytes, at most 262144"},
		{"content not UTF-8", api.KindConfigFile, func(o api.Object) { cfile(o).Content = "\xc3\x28" }, "spec.content", "must be UTF-8 text"},
		{"config file in the logs directory", api.KindConfigFile, func(o api.Object) { cfile(o).Path = "logs/app.log" }, "spec.path", "the app's log directory"},

		// Service metrics
		{"metrics port 0", api.KindService, func(o api.Object) { svc(o).Metrics.Port = 0 }, "spec.metrics.port", "must be between 1 and 65535"},
		{"metrics path relative", api.KindService, func(o api.Object) { svc(o).Metrics.Path = "stats" }, "spec.metrics.path", "must be an absolute path"},
		{"metrics path with a fragment", api.KindService, func(o api.Object) { svc(o).Metrics.Path = "/m#x" }, "spec.metrics.path", "must be an absolute path"},
		{"json mappings for prometheus", api.KindService, func(o api.Object) { svc(o).Metrics.Format = meshv1.MetricsFormat_METRICS_FORMAT_PROMETHEUS }, "spec.metrics.json", "only for format json"},
		{"json format without mappings", api.KindService, func(o api.Object) { svc(o).Metrics.Json = nil }, "spec.metrics.json", "at least one is required"},
		{"json field with an empty key", api.KindService, func(o api.Object) { svc(o).Metrics.Json[0].Field = "a..b" }, "spec.metrics.json[0].field", "each key must be"},
		{"json metric name invalid", api.KindService, func(o api.Object) { svc(o).Metrics.Json[0].Name = "a-b" }, "spec.metrics.json[0].name", "is not a Prometheus metric name"},
		{"json metric name duplicate", api.KindService, func(o api.Object) { svc(o).Metrics.Json[1].Name = "requests_total" }, "spec.metrics.json[1].name", "duplicates spec.metrics.json[0]"},
		{"json metric type required", api.KindService, func(o api.Object) { svc(o).Metrics.Json[1].Type = 0 }, "spec.metrics.json[1].type", "required; one of gauge, counter"},
		{"json metric help with a newline", api.KindService, func(o api.Object) { svc(o).Metrics.Json[0].Help = "a\nb" }, "spec.metrics.json[0].help", "printable UTF-8"},

		// ExternalService
		{"no hosts", api.KindExternalService, func(o api.Object) { ext(o).Hosts = nil }, "spec.hosts", "at least one is required"},
		{"host with a path", api.KindExternalService, func(o api.Object) { ext(o).Hosts[0] = "example.com/x" }, "spec.hosts[0]", "neither an IP address nor a DNS name"},
		{"host upper case", api.KindExternalService, func(o api.Object) { ext(o).Hosts[0] = "Example.com" }, "spec.hosts[0]", "neither an IP address nor a DNS name"},
		{"host with a zone", api.KindExternalService, func(o api.Object) { ext(o).Hosts[1] = "fe80::1%eth0" }, "spec.hosts[1]", "zone is not allowed"},
		{"duplicate host", api.KindExternalService, func(o api.Object) { ext(o).Hosts[1] = "payments.example.com" }, "spec.hosts[1]", "duplicates spec.hosts[0]"},
		{"external port 0", api.KindExternalService, func(o api.Object) { ext(o).Port = 0 }, "spec.port", "must be between 1 and 65535"},
		{"external protocol required", api.KindExternalService, func(o api.Object) { ext(o).Protocol = 0 }, "spec.protocol", "required; one of tls, http, https, tcp"},
		{"server name for plain http", api.KindExternalService, func(o api.Object) {
			ext(o).Protocol = meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTP
			ext(o).CaBundle, ext(o).ClientCertificate = "", nil
		}, "spec.serverName", "only for protocol tls or https, not http"},
		{"ca bundle not PEM", api.KindExternalService, func(o api.Object) { ext(o).CaBundle = "hello" }, "spec.caBundle", "holds no PEM certificate"},
		{"ca bundle with a key", api.KindExternalService, func(o api.Object) {
			ext(o).CaBundle = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		}, "spec.caBundle", `is a "PRIVATE KEY", not a CERTIFICATE`},
		{"ca bundle that does not parse", api.KindExternalService, func(o api.Object) {
			ext(o).CaBundle = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
		}, "spec.caBundle", "certificate 1 does not parse"},
		{"client cert relative", api.KindExternalService, func(o api.Object) { ext(o).ClientCertificate.CertFile = "tls.crt" }, "spec.clientCertificate.certFile", "must be an absolute path"},
		{"client key not clean", api.KindExternalService, func(o api.Object) { ext(o).ClientCertificate.KeyFile = "/etc/../etc/tls.key" }, "spec.clientCertificate.keyFile", "is not clean"},
		{"connect timeout too long", api.KindExternalService, func(o api.Object) { ext(o).ConnectTimeout = dur(2 * time.Minute) }, "spec.connectTimeout", "must be at most 1m0s"},
		{"allowed service not a label", api.KindExternalService, func(o api.Object) { ext(o).AllowedServices[0] = "Web" }, "spec.allowedServices[0]", "is not a DNS label"},

		// LogAdapter
		{"adapter without files", api.KindLogAdapter, func(o api.Object) { ladapt(o).Files = nil }, "spec.files", "at least one is required"},
		{"adapter file escapes", api.KindLogAdapter, func(o api.Object) { ladapt(o).Files[0] = "../state/svid_key.pem" }, "spec.files[0]", `has a ".." segment`},
		{"adapter file absolute", api.KindLogAdapter, func(o api.Object) { ladapt(o).Files[0] = "/var/log/app.log" }, "spec.files[0]", "must be relative"},
		{"adapter glob invalid", api.KindLogAdapter, func(o api.Object) { ladapt(o).Files[1] = "logs/[a.log" }, "spec.files[1]", "is not a valid glob"},
		{"adapter record start invalid", api.KindLogAdapter, func(o api.Object) { ladapt(o).RecordStart = "(" }, "spec.recordStart", "invalid regex"},
		{"adapter record too large", api.KindLogAdapter, func(o api.Object) { ladapt(o).MaxRecordBytes = 2 << 20 }, "spec.maxRecordBytes", "must be at most 1048576"},
		{"adapter pattern without groups", api.KindLogAdapter, func(o api.Object) { ladapt(o).Pattern = ".*" }, "spec.pattern", "has no named group"},
		{"adapter regex without pattern", api.KindLogAdapter, func(o api.Object) { ladapt(o).Pattern = "" }, "spec.pattern", "required for format regex"},
		{"adapter pattern for json", api.KindLogAdapter, func(o api.Object) { ladapt(o).Format = meshv1.LogFormat_LOG_FORMAT_JSON }, "spec.pattern", "only for format regex"},
		{"adapter unknown field", api.KindLogAdapter, func(o api.Object) { ladapt(o).Fields[0] = "secret" }, "spec.fields[0]", `unknown field "secret"`},

		// LogShipping
		{"shipping endpoint plain http", api.KindLogShipping, func(o api.Object) { lship(o).Endpoint = "http://s3.example.com" }, "spec.endpoint", "plain http only to a loopback address"},
		{"shipping endpoint with a path", api.KindLogShipping, func(o api.Object) { lship(o).Endpoint = "https://s3.example.com/bucket" }, "spec.endpoint", "must have no path"},
		{"shipping endpoint with user info", api.KindLogShipping, func(o api.Object) { lship(o).Endpoint = "https://k:s@s3.example.com" }, "spec.endpoint", "must not carry user info"},
		{"shipping bucket upper case", api.KindLogShipping, func(o api.Object) { lship(o).Bucket = "Logs" }, "spec.bucket", "only lower-case letters"},
		{"shipping bucket an address", api.KindLogShipping, func(o api.Object) { lship(o).Bucket = "10.0.0.1" }, "spec.bucket", "must not be an IP address"},
		{"shipping region", api.KindLogShipping, func(o api.Object) { lship(o).Region = "eu west" }, "spec.region", "at most 64 letters"},
		{"shipping credentials relative", api.KindLogShipping, func(o api.Object) { lship(o).CredentialsFile = "creds" }, "spec.credentialsFile", "must be an absolute path"},
		{"shipping batch too small", api.KindLogShipping, func(o api.Object) { lship(o).BatchBytes = 1024 }, "spec.batchBytes", "must be between 65536 and 67108864"},
		{"shipping batch age too short", api.KindLogShipping, func(o api.Object) { lship(o).BatchAge = dur(time.Millisecond) }, "spec.batchAge", "must be at least 1s"},
		{"shipping spool below 4 batches", api.KindLogShipping, func(o api.Object) { lship(o).SpoolBytes = 1 << 20 }, "spec.spoolBytes", "must be between 4 times the batch size"},
	}
	covered := map[api.Kind]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := base(t, tc.kind)
			tc.mutate(o)
			err := o.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			if !errors.Is(err, api.ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			fes := api.FieldErrors(err)
			if len(fes) != 1 {
				t.Fatalf("got %d errors, want 1:\n%v", len(fes), err)
			}
			fe := fes[0]
			if fe.Field != tc.field || !strings.Contains(fe.Reason, tc.reason) {
				t.Errorf("got %s: %s\nwant %s: …%s…", fe.Field, fe.Reason, tc.field, tc.reason)
			}
			k := api.KeyOf(o)
			if fe.Kind != k.Kind || fe.Namespace != k.Namespace || fe.Name != k.Name {
				t.Errorf("error names %s %s/%s, want %s", fe.Kind, fe.Namespace, fe.Name, k)
			}
			prefix := "api: " + k.String() + ": " + tc.field + ": "
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("message %q does not start with %q", err.Error(), prefix)
			}
			covered[tc.kind] = true
		})
	}
	for _, kind := range api.Kinds() {
		if !covered[kind] {
			t.Errorf("no case for %s", kind)
		}
	}
}

// TestValidateNilSpec: an object with no spec is invalid, not a panic.
func TestValidateNilSpec(t *testing.T) {
	objs := []api.Object{
		&api.Service{Metadata: api.Metadata{Name: "a", Namespace: "b"}},
		&api.Route{Metadata: api.Metadata{Name: "a", Namespace: "b"}},
		&api.RateLimit{Metadata: api.Metadata{Name: "a", Namespace: "b"}},
		&api.AccessLog{Metadata: api.Metadata{Name: "a", Namespace: "b"}},
		&api.AuthorizationPolicy{Metadata: api.Metadata{Name: "a", Namespace: "b"}},
		&api.ConfigFile{Metadata: api.Metadata{Name: "a", Namespace: "b"}},
		&api.ExternalService{Metadata: api.Metadata{Name: "a", Namespace: "b"}},
		&api.LogAdapter{Metadata: api.Metadata{Name: "a", Namespace: "b"}},
		&api.LogShipping{Metadata: api.Metadata{Name: "a", Namespace: "b"}},
	}
	for _, o := range objs {
		if err := o.Validate(); err == nil {
			t.Errorf("%s with a nil spec is valid", o.Kind())
		}
	}
}

// TestValidateMinimal: the smallest valid object of each kind, so that
// optional fields stay optional.
func TestValidateMinimal(t *testing.T) {
	in := `apiVersion: minimesh.io/v1alpha1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80, protocol: http}], servingIdentities: ["*"]}
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: web}
spec: {service: web, backends: [{service: web}]}
---
apiVersion: minimesh.io/v1alpha1
kind: RateLimit
metadata: {name: web}
spec: {service: web, requestsPerSecond: 0.5}
---
apiVersion: minimesh.io/v1alpha1
kind: AccessLog
metadata: {name: web}
spec: {service: web}
---
apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web}
spec: {service: web, rules: [{action: deny}]}
---
apiVersion: minimesh.io/v1alpha1
kind: ConfigFile
metadata: {name: web}
spec: {service: web, path: x}
---
apiVersion: minimesh.io/v1alpha1
kind: ExternalService
metadata: {name: web}
spec: {hosts: [db.example.com], port: 5432, protocol: tls}
---
apiVersion: minimesh.io/v1alpha1
kind: LogAdapter
metadata: {name: web}
spec: {service: web, files: [logs/app.log]}
---
apiVersion: minimesh.io/v1alpha1
kind: LogShipping
metadata: {name: web}
spec: {service: web, endpoint: "https://s3.example.com", bucket: logs, credentialsFile: /etc/s3/credentials}
`
	docs := decodeString(t, in)
	if len(docs) != len(api.Kinds()) {
		t.Fatalf("got %d documents", len(docs))
	}
	if got := api.Burst(0.5, 0); got != 1 {
		t.Errorf("Burst(0.5, 0) = %d, want 1", got)
	}
	if got := api.Burst(100.5, 0); got != 101 {
		t.Errorf("Burst(100.5, 0) = %d, want 101", got)
	}
	if got := api.Burst(100, 7); got != 7 {
		t.Errorf("Burst(100, 7) = %d, want 7", got)
	}
}

// TestValidateReportsEveryError: several problems, several errors, capped.
func TestValidateReportsEveryError(t *testing.T) {
	o := base(t, api.KindRoute)
	route(o).Service = ""
	route(o).Retries.Attempts = 99
	if n := len(api.FieldErrors(o.Validate())); n != 2 {
		t.Errorf("got %d errors, want 2", n)
	}
	s := base(t, api.KindService)
	svc(s).ServingIdentities = repeat(64, func(int) string { return "bad" })
	fes := api.FieldErrors(s.Validate())
	if len(fes) != 51 || fes[50].Reason != "too many errors; the rest are not shown" {
		t.Errorf("got %d errors, want 50 and a last one saying there are more", len(fes))
	}
}
