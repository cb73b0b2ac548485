package ratelimit_test

import (
	"fmt"
	"net/http"

	"minimesh/api"
	"minimesh/dataplane/ratelimit"
	meshv1 "minimesh/proto/mesh/v1"
)

func Example() {
	limits := []*api.RateLimit{{
		Metadata: api.Metadata{Namespace: "prod", Name: "per-caller"},
		Spec: &meshv1.RateLimitSpec{
			Service: "api", RequestsPerSecond: 1, Burst: 2, PerSourceIdentity: true,
			Overrides: []*meshv1.RateLimitOverride{{Identity: "spiffe://minimesh.local/ns/ops/**", RequestsPerSecond: 100}},
		},
	}}
	l, err := ratelimit.Compile(ratelimit.Config{}, limits)
	if err != nil {
		panic(err)
	}
	web := "spiffe://minimesh.local/ns/prod/sa/web"
	for range 3 {
		r := l.Allow("", web)
		fmt.Println(r.Allowed, r.Limit, r.Remaining)
	}
	r := l.Allow("", web)
	h := http.Header{}
	r.SetHeaders(h)
	fmt.Println(h.Get("Retry-After"), h.Get("RateLimit-Limit"), h.Get("RateLimit-Policy"))
	fmt.Println(l.Allow("", "spiffe://minimesh.local/ns/ops/sa/probe").Limit)
	// Output:
	// true 2 1
	// true 2 0
	// false 2 0
	// 1 2 2;w=2
	// 100
}
