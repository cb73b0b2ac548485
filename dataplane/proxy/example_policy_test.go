package proxy_test

import (
	"fmt"

	"minimesh/api"
	"minimesh/api/authz"
	"minimesh/dataplane/proxy"
	meshv1 "minimesh/proto/mesh/v1"
)

// CompilePolicy takes the resources of the proxy's own service from a
// snapshot; the Inbound decides every request with the result.
func ExampleCompilePolicy() {
	deny := &api.AuthorizationPolicy{
		Metadata: api.Metadata{Namespace: "default", Name: "no-admin"},
		Spec: &meshv1.AuthorizationPolicySpec{Service: "api", Rules: []*meshv1.AuthorizationRule{{
			Action: meshv1.AuthorizationAction_AUTHORIZATION_ACTION_DENY,
			Paths:  []*meshv1.AuthorizationPath{{Kind: &meshv1.AuthorizationPath_Prefix{Prefix: "/admin"}}},
		}}},
	}
	snap := &meshv1.Snapshot{Version: "7", Resources: []*meshv1.Resource{api.ToProto(deny)},
		DeniedIdentities: []string{"spiffe://minimesh.local/ns/default/sa/intruder"}}
	pol, err := proxy.CompilePolicy(proxy.PolicyConfig{Namespace: "default", Service: "api"}, snap, nil)
	if err != nil {
		panic(err)
	}
	d := pol.Authz().Check(authz.Request{Peer: "spiffe://minimesh.local/ns/default/sa/web", Method: "GET", Path: "/admin/users"})
	fmt.Println(d.Allowed, d.Policy, d.Reason)
	fmt.Println(pol.Revocations().Refused("spiffe://minimesh.local/ns/default/sa/intruder", nil))
	// Then: in.SetPolicy(pol); out.SetRevocations(pol.Revocations()).

	// Output:
	// false default/no-admin matched a deny rule
	// proxy: peer revoked: identity spiffe://minimesh.local/ns/default/sa/intruder is denied
}
