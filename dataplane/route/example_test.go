package route_test

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/api"
	"minimesh/dataplane/route"
	meshv1 "minimesh/proto/mesh/v1"
)

func Example() {
	w90, w10 := uint32(90), uint32(10)
	routes := []*api.Route{
		{
			Metadata: api.Metadata{Namespace: "prod", Name: "10-api"},
			Spec: &meshv1.RouteSpec{
				Service: "api",
				Matches: []*meshv1.RouteMatch{{Path: &meshv1.PathMatch{Kind: &meshv1.PathMatch_Prefix{Prefix: "/v1/"}}}},
				Backends: []*meshv1.RouteBackend{
					{Service: "api", Weight: &w90},
					{Service: "api", Subset: "canary", Weight: &w10},
				},
				Timeout: durationpb.New(2 * time.Second),
				Retries: &meshv1.RetryPolicy{Attempts: 2},
			},
		},
		{
			Metadata: api.Metadata{Namespace: "prod", Name: "90-rest"},
			Spec:     &meshv1.RouteSpec{Service: "api", Backends: []*meshv1.RouteBackend{{Service: "api"}}},
		},
	}
	tbl, err := route.Compile(route.Config{}, routes)
	if err != nil {
		panic(err)
	}
	r := tbl.Match(route.Request{Method: "GET", Path: "/v1/users"})
	fmt.Println(r.Name, r.Timeout, r.TotalWeight(), r.BackendAt(95).Subset)
	fmt.Println(r.Retry.Retryable(route.Attempt{Method: "GET", Status: 503}))
	fmt.Println(r.Retry.Retryable(route.Attempt{Method: "POST", Status: 503}))
	fmt.Println(tbl.Match(route.Request{Method: "GET", Path: "/health"}).Name)
	// Output:
	// 10-api 2s 100 canary
	// true
	// false
	// 90-rest
}
