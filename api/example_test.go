package api_test

import (
	"fmt"
	"os"
	"strings"

	"minimesh/api"
)

func ExampleDecode() {
	in := `apiVersion: minimesh.io/v1alpha1
kind: Service
metadata:
  name: web
spec:
  ports: [{port: 8080, protocol: http}]
  servingIdentities: ["spiffe://minimesh.local/ns/default/sa/web"]
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata:
  name: web
spec:
  service: web
  backends: [{service: web}]
  timeout: 1.5s
  retries: {attempts: 2, retryOn: [gateway-error]}
`
	docs, err := api.Decode("web.yaml", strings.NewReader(in))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range docs {
		fmt.Printf("document %d (line %d): %s\n", d.Index, d.Line, api.KeyOf(d.Object))
	}
	r := docs[1].Object.(*api.Route)
	fmt.Println(r.Spec.GetTimeout().AsDuration(), r.Spec.GetRetries().GetRetryOn())
	// Output:
	// document 1 (line 1): Service "default/web"
	// document 2 (line 9): Route "default/web"
	// 1.5s [RETRY_ON_GATEWAY_ERROR]
}

func ExampleDecode_errors() {
	in := `apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: web, namespace: prod}
spec:
  service: web
  backends: [{service: web, weight: 0}]
  retries: {attempts: 20, tries: 1}
---
apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: api, namespace: prod}
spec:
  service: api
  backends: [{service: api, weight: 0}]
  retries: {attempts: 20}
`
	_, err := api.Decode("routes.yaml", strings.NewReader(in))
	fmt.Println(err)
	// Output:
	// api: routes.yaml: document 1 (line 1): Route "prod/web": spec.retries.tries: unknown field; spec.retries has only attempts, perTryTimeout, retryOn, budget, retryNonIdempotent, maxBodyBytes
	// api: routes.yaml: document 2 (line 9): Route "prod/api": spec.backends: the weights must not all be 0
	// api: routes.yaml: document 2 (line 9): Route "prod/api": spec.retries.attempts: must be between 0 and 10, got 20
}

func ExampleEncode() {
	in := `apiVersion: minimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web}
spec:
  service: web
  rules:
  - {action: ALLOW, from: ["spiffe://minimesh.local/ns/default/sa/*"], methods: [GET]}
`
	docs, _ := api.Decode("in.yaml", strings.NewReader(in))
	if err := api.Encode(os.Stdout, docs[0].Object); err != nil {
		fmt.Println(err)
	}
	// Output:
	// apiVersion: minimesh.io/v1alpha1
	// kind: AuthorizationPolicy
	// metadata:
	//   name: web
	//   namespace: default
	// spec:
	//   service: web
	//   rules:
	//   - action: allow
	//     from:
	//     - spiffe://minimesh.local/ns/default/sa/*
	//     methods:
	//     - GET
}

func ExampleValidateReferences() {
	docs, _ := api.Decode("route.yaml", strings.NewReader(`apiVersion: minimesh.io/v1alpha1
kind: Route
metadata: {name: web}
spec: {service: web, backends: [{service: web}]}
`))
	// Nothing stored yet, and the batch has no Service web.
	err := api.ValidateReferences([]api.Object{docs[0].Object}, api.NewIndex())
	fmt.Println(err)
	// Output:
	// api: Route "default/web": spec.service: Service "default/web" not found
	// api: Route "default/web": spec.backends[0].service: Service "default/web" not found
}

func ExampleRoute_Validate() {
	r, _ := api.New(api.KindRoute)
	r.Meta().Name = "r1"
	fmt.Println(r.Validate())
	// Output:
	// api: Route "default/r1": spec.service: required
	// api: Route "default/r1": spec.backends: at least one is required
}

func ExampleIdentityPattern_Match() {
	p, err := api.ParseIdentityPattern("spiffe://minimesh.local/ns/prod/sa/*")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, id := range []string{
		"spiffe://minimesh.local/ns/prod/sa/web",
		"spiffe://minimesh.local/ns/prod/sa/web/extra",
		"spiffe://minimesh.local/ns/dev/sa/web",
	} {
		fmt.Println(id, p.Match(id))
	}
	// Output:
	// spiffe://minimesh.local/ns/prod/sa/web true
	// spiffe://minimesh.local/ns/prod/sa/web/extra false
	// spiffe://minimesh.local/ns/dev/sa/web false
}

func ExampleCompileRegex() {
	re, err := api.CompileRegex("/v[0-9]+/items/.*")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(re.MatchString("/v2/items/42"), re.MatchString("/api/v2/items/42"))
	// Output: true false
}
