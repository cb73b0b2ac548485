// Package certs is everything X.509 in minimesh: the CA (root, intermediate,
// signing), SPIFFE IDs and X509-SVIDs, trust bundles, tls.Config builders
// whose certificates are hot-swapped, and a file-backed certificate
// reloader. It knows nothing of gRPC or storage.
//
// Issuing an SVID from a CSR (meshd side) and using it (proxy side):
//
//	td := spiffeid.RequireTrustDomainFromString("example.org")
//	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
//	// ... persist ca.MarshalState() 0600, publish ca.RootPin() to new proxies.
//
//	id, err := certs.WorkloadID(td, "shop", "web")
//	key, err := certs.GenerateKey()          // the key never leaves the proxy
//	csr, err := certs.NewCSR(key, id)
//	chain, err := ca.SignCSR(csr, id, 0)      // [leaf, intermediate], 1 h
//
//	svids := certs.NewSVIDSource(nil)
//	svids.Set(&x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key})
//	bundles := certs.NewBundleSource(ca.Bundle())
//	srv := certs.MTLSServerConfig(svids, bundles, certs.AuthorizeMemberOf(td), certs.TLSOptions{})
//	cli := certs.MTLSClientConfig(svids, bundles, certs.AuthorizeID(peerID), certs.TLSOptions{})
//	// Renewal: svids.Set(newSVID). Root rotation: bundles.Set(newBundle).
//	// Neither rebuilds a listener nor cuts a live connection.
//
// Rotation returns new CA values (persist MarshalState, then swap):
//
//	if ca.IntermediateNeedsRotation() { ca, err = ca.RotateIntermediate() }
//	ca, err = ca.PrepareRootRotation() // 1: bundle gains the next root
//	ca, err = ca.ActivateNextRoot()    // 2: next root signs, old one retired
//	ca, err = ca.DropRetiredRoots()    // 3: bundle holds the new root only
//
// Bootstrap before a proxy holds a bundle: meshd serves a chain including its
// root (CA.IssueServingSVID, OptionalClientServerConfig) and the proxy checks
// it against the root pin (PinnedClientConfig(ca.RootPin(), MeshdID(td), ...)).
//
// Public HTTPS certificates from files, reloaded in place:
//
//	fc, err := certs.NewFileCertificate(certs.FileCertificateConfig{CertFile: crt, KeyFile: key})
//	cfg := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: fc.GetCertificate}
//	go fc.Run(ctx)
//
// All TLS configs require TLS 1.3. SVIDs have exactly one URI SAN, are not
// CAs, have DigitalSignature key usage and ServerAuth+ClientAuth extended
// key usages, a random 128-bit serial and a SubjectKeyId.
//
// Errors are prefixed "certs: " and wrap the sentinels of errors.go.
package certs
