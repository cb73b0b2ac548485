package certs_test

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
)

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

func ExampleNewCA() {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td, Clock: fixedClock{now}})
	if err != nil {
		panic(err)
	}

	// The proxy makes a key and a CSR for its identity; the key stays there.
	id, _ := certs.WorkloadID(td, "shop", "web")
	key, _ := certs.GenerateKey()
	csr, _ := certs.NewCSR(key, id)

	// meshd signs it for exactly the identity it has authenticated.
	chain, err := ca.SignCSR(csr, id, 0)
	if err != nil {
		panic(err)
	}
	leaf := chain[0]
	fmt.Println(leaf.URIs[0])
	fmt.Println(len(chain), "certificates, CA:", leaf.IsCA)
	fmt.Println("valid for", leaf.NotAfter.Sub(now))

	// A CSR for another identity is refused.
	_, err = ca.SignCSR(csr, certs.MeshdID(td), 0)
	fmt.Println(err != nil)
	// Output:
	// spiffe://example.org/ns/shop/sa/web
	// 2 certificates, CA: false
	// valid for 1h0m0s
	// true
}

func ExampleWorkloadID() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id, _ := certs.WorkloadID(td, "shop", "web")
	ns, sa, _ := certs.ParseWorkloadID(id)
	fmt.Println(id, ns, sa)
	_, err := certs.WorkloadID(td, "Shop", "web")
	fmt.Println(err)
	// Output:
	// spiffe://example.org/ns/shop/sa/web shop web
	// certs: invalid SPIFFE ID: namespace "Shop" is not a DNS-1123 label (lowercase letters, digits, inner '-')
}

func ExampleParsePin() {
	_, err := certs.ParsePin("sha256:abc")
	fmt.Println(err)
	// Output:
	// certs: invalid pin: want 64 hex digits, got 3 characters
}
