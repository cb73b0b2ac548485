package api_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// examples returns fresh copies of the six examples, all in namespace prod
// and all about service web: a consistent set.
func examples(t *testing.T) map[api.Kind]api.Object {
	out := map[api.Kind]api.Object{}
	for _, k := range api.Kinds() {
		out[k] = base(t, k)
	}
	return out
}

func all(m map[api.Kind]api.Object) []api.Object {
	var objs []api.Object
	for _, k := range api.Kinds() {
		objs = append(objs, m[k])
	}
	return objs
}

func TestValidateReferences(t *testing.T) {
	type tc struct {
		name   string
		batch  func(ex map[api.Kind]api.Object) []api.Object
		stored func(ex map[api.Kind]api.Object) []api.Object
		// want: "Kind name field: reason" substrings, one per error; none
		// means valid.
		want  []string
		cause error
	}
	tests := []tc{
		{name: "consistent batch", batch: all},
		{name: "references resolved from the store",
			batch:  func(ex map[api.Kind]api.Object) []api.Object { return []api.Object{ex[api.KindRoute]} },
			stored: func(ex map[api.Kind]api.Object) []api.Object { return []api.Object{ex[api.KindService]} }},
		{name: "missing route",
			batch:  func(ex map[api.Kind]api.Object) []api.Object { return []api.Object{ex[api.KindRateLimit]} },
			stored: func(ex map[api.Kind]api.Object) []api.Object { return []api.Object{ex[api.KindService]} },
			want:   []string{`RateLimit "prod/api-limit": spec.route: Route "prod/10-api" not found`}, cause: api.ErrMissingReference},
		{name: "references resolved from batch and store",
			batch: func(ex map[api.Kind]api.Object) []api.Object { return []api.Object{ex[api.KindRateLimit]} },
			stored: func(ex map[api.Kind]api.Object) []api.Object {
				return []api.Object{ex[api.KindService], ex[api.KindRoute]}
			}},
		{name: "missing service everywhere",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				objs := all(ex)
				return objs[1:]
			},
			want: []string{
				`Route "prod/10-api": spec.service: Service "prod/web" not found`,
				`Route "prod/10-api": spec.backends[0].service: Service "prod/web" not found`,
				`Route "prod/10-api": spec.backends[1].service: Service "prod/web" not found`,
				`Route "prod/10-api": spec.backends[2].service: Service "prod/web" not found`,
				`RateLimit "prod/api-limit": spec.service: Service "prod/web" not found`,
				`AccessLog "prod/web-debug": spec.service: Service "prod/web" not found`,
				`AuthorizationPolicy "prod/web-authz": spec.service: Service "prod/web" not found`,
				`ConfigFile "prod/web-features": spec.service: Service "prod/web" not found`,
				`ExternalService "prod/payments": spec.allowedServices[0]: Service "prod/web" not found`,
				`LogAdapter "prod/web-app-log": spec.service: Service "prod/web" not found`,
				`LogShipping "prod/web-logs": spec.service: Service "prod/web" not found`,
			}, cause: api.ErrMissingReference},
		{name: "service in another namespace does not count",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				ex[api.KindService].Meta().Namespace = "dev"
				return []api.Object{ex[api.KindService], ex[api.KindAccessLog]}
			},
			want: []string{`AccessLog "prod/web-debug": spec.service: Service "prod/web" not found`}, cause: api.ErrMissingReference},
		{name: "backend to a missing service",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				route(ex[api.KindRoute]).Backends[1].Service = "api"
				route(ex[api.KindRoute]).Backends[1].Subset = ""
				return []api.Object{ex[api.KindService], ex[api.KindRoute]}
			},
			want: []string{`Route "prod/10-api": spec.backends[1].service: Service "prod/api" not found`}, cause: api.ErrMissingReference},
		{name: "undeclared subset",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				route(ex[api.KindRoute]).Backends[1].Subset = "blue"
				return []api.Object{ex[api.KindService], ex[api.KindRoute]}
			},
			want: []string{`Route "prod/10-api": spec.backends[1].service: Service "prod/web" declares no subset "blue"`}, cause: api.ErrMissingReference},
		{name: "undeclared port",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				route(ex[api.KindRoute]).Backends[0].Port = 81
				return []api.Object{ex[api.KindService], ex[api.KindRoute]}
			},
			want: []string{`Route "prod/10-api": spec.backends[0].service: Service "prod/web" declares no port 81`}, cause: api.ErrMissingReference},
		{name: "the batch's service replaces the stored one",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				svc(ex[api.KindService]).Subsets = nil
				return []api.Object{ex[api.KindService]}
			},
			stored: func(ex map[api.Kind]api.Object) []api.Object {
				old := api.Clone(ex[api.KindService])
				svc(old).Subsets = []*meshv1.ServiceSubset{{Name: "canary", Identities: []string{"*"}}}
				return []api.Object{old, ex[api.KindRoute]}
			},
			// Only the batch is checked: the stored route's now dangling
			// subset is the store's business on delete/replace.
		},
		{name: "route for a tcp-only service",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				svc(ex[api.KindService]).Ports = []*meshv1.ServicePort{{Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_TCP}}
				r := route(ex[api.KindRoute])
				r.Backends = r.Backends[:1]
				return []api.Object{ex[api.KindService], ex[api.KindRoute]}
			},
			want: []string{`Route "prod/10-api": spec.service: Service "prod/web" has only tcp ports`}, cause: api.ErrMissingReference},
		{name: "rate limit on another service's route",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				other := api.Clone(ex[api.KindService])
				other.Meta().Name = "api"
				rl(ex[api.KindRateLimit]).Service = "api"
				return []api.Object{ex[api.KindService], other, ex[api.KindRoute], ex[api.KindRateLimit]}
			},
			want: []string{`RateLimit "prod/api-limit": spec.route: Route "prod/10-api" routes service "web", not "api"`}, cause: api.ErrMissingReference},
		{name: "same key twice in one apply",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				return []api.Object{ex[api.KindService], api.Clone(ex[api.KindService])}
			},
			want: []string{`Service "prod/web": metadata.name: appears more than once in one apply`}, cause: api.ErrConflict},
		{name: "two config files with one path in the batch",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				second := api.Clone(ex[api.KindConfigFile])
				second.Meta().Name = "web-features-2"
				return []api.Object{ex[api.KindService], ex[api.KindConfigFile], second}
			},
			want: []string{`ConfigFile "prod/web-features-2": spec.path: "conf.d/features.json" is also the path of ConfigFile "prod/web-features"`}, cause: api.ErrConflict},
		{name: "a config file with a stored one's path",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				second := api.Clone(ex[api.KindConfigFile])
				second.Meta().Name = "web-features-2"
				return []api.Object{second}
			},
			stored: func(ex map[api.Kind]api.Object) []api.Object {
				return []api.Object{ex[api.KindService], ex[api.KindConfigFile]}
			},
			want: []string{`ConfigFile "prod/web-features-2": spec.path: "conf.d/features.json" is also the path of ConfigFile "prod/web-features"`}, cause: api.ErrConflict},
		{name: "a config file replacing itself",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				return []api.Object{api.Clone(ex[api.KindConfigFile])}
			},
			stored: func(ex map[api.Kind]api.Object) []api.Object {
				return []api.Object{ex[api.KindService], ex[api.KindConfigFile]}
			}},
		{name: "config files of other services may share a path",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				other := api.Clone(ex[api.KindService])
				other.Meta().Name = "api"
				second := api.Clone(ex[api.KindConfigFile])
				second.Meta().Name = "api-features"
				cfile(second).Service = "api"
				return []api.Object{ex[api.KindService], other, ex[api.KindConfigFile], second}
			}},
		{name: "a second access log for a service",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				second := api.Clone(ex[api.KindAccessLog])
				second.Meta().Name = "web-debug-2"
				return []api.Object{second}
			},
			stored: func(ex map[api.Kind]api.Object) []api.Object {
				return []api.Object{ex[api.KindService], ex[api.KindAccessLog]}
			},
			want: []string{`AccessLog "prod/web-debug-2": spec.service: service "web" also has AccessLog "prod/web-debug"; at most one AccessLog per service`}, cause: api.ErrConflict},
		{name: "two access logs in one batch",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				second := api.Clone(ex[api.KindAccessLog])
				second.Meta().Name = "web-debug-2"
				return []api.Object{ex[api.KindService], ex[api.KindAccessLog], second}
			},
			want: []string{
				`AccessLog "prod/web-debug": spec.service: service "web" also has AccessLog "prod/web-debug-2"`,
				`AccessLog "prod/web-debug-2": spec.service: service "web" also has AccessLog "prod/web-debug"`,
			}, cause: api.ErrConflict},
		{name: "a second log shipping for a service",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				second := api.Clone(ex[api.KindLogShipping])
				second.Meta().Name = "web-logs-2"
				return []api.Object{second}
			},
			stored: func(ex map[api.Kind]api.Object) []api.Object {
				return []api.Object{ex[api.KindService], ex[api.KindLogShipping]}
			},
			want: []string{`LogShipping "prod/web-logs-2": spec.service: service "web" also has LogShipping "prod/web-logs"; at most one LogShipping per service`}, cause: api.ErrConflict},
		{name: "an external service for every service needs no Service",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				ex[api.KindExternalService].(*api.ExternalService).Spec.AllowedServices = nil
				return []api.Object{ex[api.KindExternalService]}
			}},
		{name: "an access log replacing itself",
			batch: func(ex map[api.Kind]api.Object) []api.Object {
				return []api.Object{api.Clone(ex[api.KindAccessLog])}
			},
			stored: func(ex map[api.Kind]api.Object) []api.Object {
				return []api.Object{ex[api.KindService], ex[api.KindAccessLog]}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ex := examples(t)
			batch := tc.batch(ex)
			var stored api.Lookup
			if tc.stored != nil {
				stored = api.NewIndex(tc.stored(ex)...)
			}
			err := api.ValidateReferences(batch, stored)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("ValidateReferences: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("ValidateReferences accepted the batch")
			}
			if !errors.Is(err, api.ErrInvalid) || !errors.Is(err, tc.cause) {
				t.Errorf("error does not wrap ErrInvalid and %v: %v", tc.cause, err)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(tc.want), err)
			}
			for i, want := range tc.want {
				if !strings.HasPrefix(lines[i], "api: "+want) {
					t.Errorf("error %d:\n got %s\nwant api: %s…", i, lines[i], want)
				}
			}
		})
	}
}

func TestReferences(t *testing.T) {
	ex := examples(t)
	got := api.References(ex[api.KindRoute])
	want := []api.Reference{
		{Field: "spec.service", To: api.Key{Kind: api.KindService, Namespace: "prod", Name: "web"}},
		{Field: "spec.backends[0].service", To: api.Key{Kind: api.KindService, Namespace: "prod", Name: "web"}, Port: 8080},
		{Field: "spec.backends[1].service", To: api.Key{Kind: api.KindService, Namespace: "prod", Name: "web"}, Subset: "canary"},
		{Field: "spec.backends[2].service", To: api.Key{Kind: api.KindService, Namespace: "prod", Name: "web"}, Subset: "canary", Port: 9090},
	}
	if !slices.Equal(got, want) {
		t.Errorf("References(route) =\n%+v\nwant\n%+v", got, want)
	}
	if got := api.References(ex[api.KindService]); len(got) != 0 {
		t.Errorf("a Service refers to %v", got)
	}
	if got := api.References(ex[api.KindRateLimit]); len(got) != 2 || got[1].To.Kind != api.KindRoute {
		t.Errorf("References(rate limit) = %+v", got)
	}
}

func TestIndex(t *testing.T) {
	ex := examples(t)
	ix := api.NewIndex(all(ex)...)
	for _, o := range all(ex) {
		got, ok := ix.Get(api.KeyOf(o))
		if !ok || got != o {
			t.Errorf("Get(%s) = %v, %v", api.KeyOf(o), got, ok)
		}
	}
	if got := ix.ByService(api.KindConfigFile, "prod", "web"); len(got) != 1 || got[0] != ex[api.KindConfigFile] {
		t.Errorf("ByService = %v", got)
	}
	// Moving a config file to another service moves it in the index.
	moved := api.Clone(ex[api.KindConfigFile])
	cfile(moved).Service = "api"
	ix.Put(moved)
	if got := ix.ByService(api.KindConfigFile, "prod", "web"); len(got) != 0 {
		t.Errorf("after the move, web has %v", got)
	}
	if got := ix.ByService(api.KindConfigFile, "prod", "api"); len(got) != 1 || got[0] != moved {
		t.Errorf("after the move, api has %v", got)
	}
	if _, ok := ix.Get(api.Key{Kind: api.KindService, Namespace: "prod", Name: "nope"}); ok {
		t.Error("Get found a missing key")
	}
}
