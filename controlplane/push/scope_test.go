package push

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	meshv1 "minimesh/proto/mesh/v1"
)

func TestHelloEndpointScope(t *testing.T) {
	hello := func(scope ...string) *meshv1.Hello {
		return &meshv1.Hello{InstanceId: "i-1", Service: "web", AdvertiseAddress: "10.0.0.1:15006",
			EndpointScope: &meshv1.EndpointScope{Services: scope}}
	}
	many := make([]string, maxScope+1)
	for i := range many {
		many[i] = "default/s" + strings.Repeat("x", i%50)
	}
	for _, tc := range []struct {
		h    *meshv1.Hello
		want string // "" for valid
	}{
		{hello("default/api", "shop/db"), ""},
		{hello(), ""},
		{&meshv1.Hello{InstanceId: "i-1", Service: "web", AdvertiseAddress: "10.0.0.1:15006"}, ""},
		{hello("api"), "endpoint_scope.services[0]"},
		{hello("default/Api"), "endpoint_scope.services[0]"},
		{hello("default/api", "a/b/c"), "endpoint_scope.services[1]"},
		{hello(many...), "at most 256"},
	} {
		err := validateHello(tc.h)
		if tc.want == "" && err != nil || tc.want != "" && (!errors.Is(err, ErrBadHello) || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: %v, want %q", tc.h.GetEndpointScope().GetServices(), err, tc.want)
		}
	}

	scope, scoped := scopeOf(hello("shop/db", "default/api", "shop/db"))
	if !scoped || !slices.Equal(scope, []string{"default/api", "shop/db"}) {
		t.Errorf("scopeOf: %q %v, want sorted without duplicates", scope, scoped)
	}
	if _, scoped := scopeOf(&meshv1.Hello{}); scoped {
		t.Error("a Hello without a scope is scoped")
	}
	if scopeKey(nil, true) == scopeKey(nil, false) {
		t.Error("an empty scope and no scope share a group")
	}
}

func TestScopeSetFollowsRouteBackends(t *testing.T) {
	backends := map[string][]string{"default/api": {"default/api", "default/canary"}, "default/db": {"default/db-replica"}}
	got := scopeSet([]string{"default/api"}, true, backends)
	if want := map[string]bool{"default/api": true, "default/canary": true}; !maps.Equal(got, want) {
		t.Errorf("scopeSet = %v, want %v", got, want)
	}
	if scopeSet(nil, false, backends) != nil {
		t.Error("unscoped: want nil (every endpoint)")
	}
	if got := scopeSet(nil, true, backends); got == nil || len(got) != 0 {
		t.Errorf("empty scope: %v, want an empty set (no endpoint)", got)
	}
}

// The advertised address is one other proxies can dial: host:port with a
// numeric port, the host an IP that is neither unspecified nor multicast,
// or a DNS name.
func TestHelloAdvertiseAddress(t *testing.T) {
	for addr, want := range map[string]string{
		"10.0.0.1:15006":      "",
		"[fd00::1]:15006":     "",
		"127.0.0.1:15006":     "", // one machine (make demo); refused from a pod at registration
		"api-0.api.svc:15006": "",
		"10.0.0.1":            "must be host:port",
		"10.0.0.1:http":       "must be 1 to 65535",
		"10.0.0.1:0":          "must be 1 to 65535",
		"10.0.0.1:70000":      "must be 1 to 65535",
		"0.0.0.0:15006":       "not unspecified",
		"[::]:15006":          "not unspecified",
		"224.0.0.1:15006":     "multicast",
		"[fe80::1%eth0]:1":    "zoned",
		"bad_host:15006":      "an IP address or a DNS name",
		"a\x1bb:15006":        "an IP address or a DNS name",
		":15006":              "an IP address or a DNS name",
	} {
		err := validateHello(&meshv1.Hello{Service: "web", AdvertiseAddress: addr})
		if want == "" && err != nil || want != "" && (!errors.Is(err, ErrBadHello) || !strings.Contains(err.Error(), want)) {
			t.Errorf("%q: %v, want %q", addr, err, want)
		}
	}
}
