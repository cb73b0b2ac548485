// Package controlplane wires meshd: the store, the certificate authority,
// the identity, admin and push services, and the gRPC server they share.
//
//	srv, err := controlplane.New(controlplane.Config{
//		DataDir:     "/var/lib/meshd",
//		ListenAddr:  "127.0.0.1:15010",
//		TrustDomain: "minimesh.local",
//	})
//	if err != nil { ... }
//	err = srv.Run(ctx) // until ctx is cancelled
package controlplane
