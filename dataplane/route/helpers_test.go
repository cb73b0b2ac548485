package route

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/api"
	"minimesh/certs/certstest"
	meshv1 "minimesh/proto/mesh/v1"
)

func mkRoute(name string, matches []*meshv1.RouteMatch, backends ...*meshv1.RouteBackend) *api.Route {
	if len(backends) == 0 {
		backends = []*meshv1.RouteBackend{{Service: "api"}}
	}
	return &api.Route{
		Metadata: api.Metadata{Name: name, Namespace: "prod"},
		Spec:     &meshv1.RouteSpec{Service: "api", Matches: matches, Backends: backends},
	}
}

type matchOpt func(*meshv1.RouteMatch)

func m(opts ...matchOpt) *meshv1.RouteMatch {
	rm := &meshv1.RouteMatch{}
	for _, o := range opts {
		o(rm)
	}
	return rm
}

func exact(p string) matchOpt {
	return func(m *meshv1.RouteMatch) { m.Path = &meshv1.PathMatch{Kind: &meshv1.PathMatch_Exact{Exact: p}} }
}

func prefix(p string) matchOpt {
	return func(m *meshv1.RouteMatch) { m.Path = &meshv1.PathMatch{Kind: &meshv1.PathMatch_Prefix{Prefix: p}} }
}

func regex(p string) matchOpt {
	return func(m *meshv1.RouteMatch) { m.Path = &meshv1.PathMatch{Kind: &meshv1.PathMatch_Regex{Regex: p}} }
}

func methods(ms ...string) matchOpt {
	return func(m *meshv1.RouteMatch) { m.Methods = append(m.Methods, ms...) }
}

func hExact(name, v string) matchOpt {
	return func(m *meshv1.RouteMatch) {
		m.Headers = append(m.Headers, &meshv1.HeaderMatch{Name: name, Match: &meshv1.HeaderMatch_Exact{Exact: v}})
	}
}

func hPrefix(name, v string) matchOpt {
	return func(m *meshv1.RouteMatch) {
		m.Headers = append(m.Headers, &meshv1.HeaderMatch{Name: name, Match: &meshv1.HeaderMatch_Prefix{Prefix: v}})
	}
}

func hRegex(name, v string) matchOpt {
	return func(m *meshv1.RouteMatch) {
		m.Headers = append(m.Headers, &meshv1.HeaderMatch{Name: name, Match: &meshv1.HeaderMatch_Regex{Regex: v}})
	}
}

func hPresent(name string, present bool) matchOpt {
	return func(m *meshv1.RouteMatch) {
		m.Headers = append(m.Headers, &meshv1.HeaderMatch{Name: name, Match: &meshv1.HeaderMatch_Present{Present: present}})
	}
}

func backend(svc, subset string, weight uint32) *meshv1.RouteBackend {
	return &meshv1.RouteBackend{Service: svc, Subset: subset, Weight: &weight}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// fakeClock is the shared test clock (certstest.Clock); Add moves it.
type fakeClock = certstest.Clock

func newClock() *fakeClock { return certstest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) }
