// Package agent is mesh-proxy's client of meshd: it gets the proxy's
// identity, keeps it fresh, and holds the registration stream.
//
// Identity: on first start the agent bootstraps with a join token,
// authenticating meshd by the root CA's pin. It keeps its key, SVID, bundle
// and a generated instance ID in the state dir (keys 0600), so a restart
// with a valid SVID renews without a token. It renews at half the SVID's
// remaining life ±10 % jitter, keeps serving the current SVID while renewals
// fail (with backoff), and, when the SVID expires while meshd is
// unreachable, turns not-ready and re-bootstraps by itself once meshd is
// back, if the token still has uses.
//
// The proxy reads the identity through SVIDSource and BundleSource, never
// through the agent (DESIGN rule 2).
//
//	a, err := agent.New(agent.Config{ControlPlane: "127.0.0.1:15010", Token: tok, CAPin: pin,
//		Service: "web", Advertise: "10.0.0.7:15006", StateDir: "/var/run/mesh-proxy"})
//	go a.Run(ctx)
//	tlsCfg := certs.MTLSServerConfig(a.SVIDSource(), a.BundleSource(), nil, certs.TLSOptions{})
package agent
