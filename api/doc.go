// Package api holds the mesh's resources: their types, their validation and
// their YAML form. meshd, mesh-proxy and meshctl all import it; it imports
// neither controlplane nor dataplane.
//
// There are six kinds — Service, Route, RateLimit, AccessLog,
// AuthorizationPolicy and ConfigFile — each a Go type holding Metadata and
// its spec, a proto message from minimesh/proto/mesh/v1 (resources.proto
// documents every field and its rules). All six implement Object.
//
// People write resources as Kubernetes-style YAML:
//
//	apiVersion: minimesh.io/v1alpha1
//	kind: Route
//	metadata:
//	  name: api
//	  namespace: prod
//	spec:
//	  service: web
//	  matches:
//	  - path: {prefix: /api/}
//	    methods: [GET]
//	  backends:
//	  - service: web
//	    weight: 90
//	  - service: web
//	    subset: canary
//	    weight: 10
//	  timeout: 2s
//	  retries:
//	    attempts: 2
//	    perTryTimeout: 500ms
//	    retryOn: [connect-failure, gateway-error]
//
// Decode reads such a stream strictly and validates every object; errors
// name the input, the document and the field:
//
//	docs, err := api.Decode("web.yaml", f)
//	if err != nil {
//		return err // api: web.yaml: document 3 (line 25): Route "prod/api": spec.timeout: must be positive, got -1s
//	}
//	objs := make([]api.Object, len(docs))
//	for i, d := range docs {
//		objs[i] = d.Object
//	}
//	if err := api.ValidateReferences(objs, storeLookup); err != nil {
//		return err // api: Route "prod/api": spec.service: Service "prod/web" not found
//	}
//
// ToProto and FromProto convert objects to and from the meshv1.Resource
// envelope that travels over gRPC; Encode, MarshalYAML and MarshalJSON write
// them back out for people.
//
// The data plane compiles what Validate accepted with the same functions:
// ParseIdentityPattern for identities with '*' globs, CompileRegex for
// length- and size-capped RE2 expressions that match whole strings.
//
// api also holds the contracts that meshctl and mesh-proxy must read
// alike, so that meshctl imports no data-plane package:
//   - AppProbes (probes.go): the app probes `meshctl inject` moves to the
//     admin port, as JSON in MESH_APP_PROBES, and the admin port runs;
//   - ProxyInboundPort and ProxyUID (redirect.go): the capture's defaults
//     that inject writes and `mesh-proxy redirect` assumes;
//   - api/pathnorm and api/authz: the canonical path and the policy engine,
//     which the inbound proxy enforces and `meshctl authz explain` reports;
//   - api/topz: the topz and procz answers as they travel, and their text.
package api
