package certs_test

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
)

func TestInstanceIDInSubject(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/api")
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.SignCSR(csr, id, 0, certs.WithInstance("api-0123456789ab"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if got := certs.InstanceID(leaf); got != "api-0123456789ab" {
		t.Fatalf("InstanceID = %q", got)
	}
	if len(leaf.URIs) != 1 || len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Fatalf("SANs: URIs %v DNS %v IP %v email %v: want the one URI SAN only", leaf.URIs, leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	// The instance must survive verification as a peer certificate.
	if _, _, err := certs.VerifyPeerCertificates(chain, ca.Bundle(), leaf.NotBefore.Add(60e9)); err != nil {
		t.Fatal(err)
	}
	// No option: no instance.
	chain, err = ca.SignCSR(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := certs.InstanceID(chain[0]); got != "" {
		t.Fatalf("InstanceID without option = %q", got)
	}
	// A bad instance is refused, not written into a certificate.
	if _, err := ca.SignCSR(csr, id, 0, certs.WithInstance("Bad\x1b[31m")); err == nil {
		t.Fatal("SignCSR accepted an instance ID with control characters")
	}
}

func TestCheckInstanceID(t *testing.T) {
	for _, ok := range []string{"a", "api-0123456789ab", strings.Repeat("a", 63), "0-a"} {
		if err := certs.CheckInstanceID(ok); err != nil {
			t.Errorf("CheckInstanceID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "A", "a_b", "a b", "a\n", strings.Repeat("a", 64), "a.b", "ä"} {
		if err := certs.CheckInstanceID(bad); err == nil {
			t.Errorf("CheckInstanceID(%q) = nil", bad)
		}
	}
}
