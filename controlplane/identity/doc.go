// Package identity is meshd's certificate-issuing logic: join tokens, the
// Bootstrap exchange of a token and a CSR for a first X509-SVID, and Renew
// of a valid SVID for a fresh one of the same identity.
//
// A join token is "<id>.<secret>". Only SHA-256 of the secret is stored.
// It is bound to one namespace and service account, expires (default 10
// minutes) and has a use count (default 1). A Bootstrap repeated with the
// same public key returns the SVID already issued for that key, so a client
// that lost the reply does not burn a second use; a different key needs a
// use. The token is checked, the SVID signed (bound to the request's
// instance ID, certs.WithInstance) and then, in one store transaction, the
// token is checked again and its use consumed: concurrent Bootstraps with a
// one-use token have exactly one winner, and the losers' certificates are
// dropped unrecorded. Issuances are records of their own (TableIssuances),
// pruned with expired certificate records (Prune).
//
// Renew reads the identity and the instance from the caller's verified
// certificate, refuses revoked instances, revoked serials and denied
// identities, and is rate-limited per instance and per identity (SignLimits).
//
//	auth, _ := identity.New(identity.Config{Store: st, CA: ca})
//	tok, secret, _ := auth.CreateToken(identity.TokenRequest{Namespace: "default", ServiceAccount: "web"})
//	issued, err := auth.Bootstrap(secret, csrDER, "instance-1")
package identity
