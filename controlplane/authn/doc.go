// Package authn decides who may call each meshd gRPC method.
//
// meshd's TLS listener requests a client certificate but does not verify it
// in the handshake: Bootstrap must be reachable without one, and a refused
// certificate should get a clear gRPC status rather than a handshake error.
// The interceptors here verify the caller's X509-SVID against the current
// trust bundle for every call and check it against the method's Rule. A
// method without a rule is refused: deny by default.
//
//	a := authn.New(authn.Config{TrustDomain: td, Bundle: bundles, Rules: authn.Rules{
//		meshv1.IdentityService_Bootstrap_FullMethodName: authn.Public,
//		meshv1.AdminService_ListProxies_FullMethodName:  authn.Operator,
//	}})
//	srv := grpc.NewServer(grpc.UnaryInterceptor(a.Unary), grpc.StreamInterceptor(a.Stream))
package authn
