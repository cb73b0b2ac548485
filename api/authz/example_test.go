package authz_test

import (
	"fmt"

	"minimesh/api"
	"minimesh/api/authz"
	meshv1 "minimesh/proto/mesh/v1"
)

func Example() {
	policy := &api.AuthorizationPolicy{
		Metadata: api.Metadata{Namespace: "prod", Name: "api"},
		Spec: &meshv1.AuthorizationPolicySpec{Service: "api", Rules: []*meshv1.AuthorizationRule{
			{
				Action: meshv1.AuthorizationAction_AUTHORIZATION_ACTION_DENY,
				Paths:  []*meshv1.AuthorizationPath{{Kind: &meshv1.AuthorizationPath_Prefix{Prefix: "/admin"}}},
			},
			{
				Action:  meshv1.AuthorizationAction_AUTHORIZATION_ACTION_ALLOW,
				From:    []string{"spiffe://minimesh.local/ns/prod/sa/*"},
				Methods: []string{"GET"},
			},
		}},
	}
	e, err := authz.Compile([]*api.AuthorizationPolicy{policy})
	if err != nil {
		panic(err)
	}
	web := "spiffe://minimesh.local/ns/prod/sa/web"
	for _, r := range []authz.Request{
		{Peer: web, Method: "GET", Path: "/orders"},
		{Peer: web, Method: "GET", Path: "/admin/users"},
		{Peer: web, Method: "POST", Path: "/orders"},
		{Peer: "spiffe://minimesh.local/ns/dev/sa/web", Method: "GET", Path: "/orders"},
	} {
		d := e.Check(r)
		fmt.Printf("%-4s %-12s allowed=%v policy=%q rule=%d: %s\n", r.Method, r.Path, d.Allowed, d.Policy, d.Rule, d.Reason)
	}
	fmt.Print(e.Explain(authz.Request{Peer: web, Method: "GET", Path: "/x/..//%61dmin"}))
	// Output:
	// GET  /orders      allowed=true policy="prod/api" rule=1: matched an allow rule
	// GET  /admin/users allowed=false policy="prod/api" rule=0: matched a deny rule
	// POST /orders      allowed=false policy="" rule=-1: no allow rule matched (default deny when allow rules exist)
	// GET  /orders      allowed=false policy="" rule=-1: no allow rule matched (default deny when allow rules exist)
	// DENY GET /admin from spiffe://minimesh.local/ns/prod/sa/web
	//   matched a deny rule: policy prod/api rule 0: deny paths [prefix /admin]
}
