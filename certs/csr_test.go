package certs_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
)

// Keys are slow to make (RSA especially); make each kind once.
var (
	keysOnce                           sync.Once
	keyP256, keyP384, keyP224, keyP521 *ecdsa.PrivateKey
	keyRSA1024, keyRSA2048             *rsa.PrivateKey
	keyEd25519                         ed25519.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		ec := func(c elliptic.Curve) *ecdsa.PrivateKey {
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				panic(err)
			}
			return k
		}
		rs := func(bits int) *rsa.PrivateKey {
			k, err := rsa.GenerateKey(rand.Reader, bits)
			if err != nil {
				panic(err)
			}
			return k
		}
		keyP256, keyP384, keyP224, keyP521 = ec(elliptic.P256()), ec(elliptic.P384()), ec(elliptic.P224()), ec(elliptic.P521())
		keyRSA1024, keyRSA2048 = rs(1024), rs(2048)
		var err error
		if _, keyEd25519, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	})
}

func makeCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func uris(ids ...string) []*url.URL {
	var out []*url.URL
	for _, s := range ids {
		u, err := url.Parse(s)
		if err != nil {
			panic(err)
		}
		out = append(out, u)
	}
	return out
}

func mustExt(t testing.TB, oid asn1.ObjectIdentifier, v any) pkix.Extension {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oid, Value: b}
}

func TestValidateCSR(t *testing.T) {
	testKeys(t)
	const wantID = "spiffe://example.org/ns/shop/sa/web"
	want := spiffeid.RequireFromString(wantID)
	oidBC := asn1.ObjectIdentifier{2, 5, 29, 19}
	oidSAN := asn1.ObjectIdentifier{2, 5, 29, 17}
	type bc struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}
	uriName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(wantID)}
	// otherName [0] { type-id OID, [0] EXPLICIT value }, which crypto/x509 does not surface.
	otherName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true,
		Bytes: append(mustMarshal(t, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}),
			mustMarshal(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: mustMarshal(t, "admin@example.org")})...)}

	good := makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris(wantID)})
	badSig := bytes.Clone(good)
	badSig[len(badSig)-1] ^= 0xff

	tests := []struct {
		name string
		csr  []byte
		want error // nil = accepted
	}{
		{"P-256", good, nil},
		{"P-384", makeCSR(t, keyP384, &x509.CertificateRequest{URIs: uris(wantID)}), nil},
		{"RSA-2048", makeCSR(t, keyRSA2048, &x509.CertificateRequest{URIs: uris(wantID)}), nil},
		{"Ed25519 accepted", makeCSR(t, keyEd25519, &x509.CertificateRequest{URIs: uris(wantID)}), nil},
		{"subject is ignored", makeCSR(t, keyP256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "root"}, URIs: uris(wantID)}), nil},
		{"CA=false requested is fine", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris(wantID), ExtraExtensions: []pkix.Extension{mustExt(t, oidBC, bc{IsCA: false, MaxPathLen: -1})}}), nil},

		{"garbage", []byte("definitely not DER"), certs.ErrCSRMalformed},
		{"empty", nil, certs.ErrCSRMalformed},
		{"truncated", good[:len(good)/2], certs.ErrCSRMalformed},
		{"trailing data", append(bytes.Clone(good), 0), certs.ErrCSRMalformed},
		{"over 8 KiB", append(bytes.Clone(good), make([]byte, certs.MaxCSRSize)...), certs.ErrCSRMalformed},
		{"a certificate, not a CSR", certDER(t), certs.ErrCSRMalformed},
		{"bad signature", badSig, certs.ErrCSRSignature},
		{"RSA-1024", makeCSR(t, keyRSA1024, &x509.CertificateRequest{URIs: uris(wantID)}), certs.ErrWeakKey},
		{"P-224", makeCSR(t, keyP224, &x509.CertificateRequest{URIs: uris(wantID)}), certs.ErrWeakKey},
		{"P-521 not in the allowed set", makeCSR(t, keyP521, &x509.CertificateRequest{URIs: uris(wantID)}), certs.ErrWeakKey},
		{"CA requested", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris(wantID), ExtraExtensions: []pkix.Extension{mustExt(t, oidBC, bc{IsCA: true, MaxPathLen: -1})}}), certs.ErrCSRCA},
		{"extra DNS SAN", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris(wantID), DNSNames: []string{"web.shop.svc"}}), certs.ErrCSRExtraSAN},
		{"IP SAN", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris(wantID), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}), certs.ErrCSRExtraSAN},
		{"email SAN", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris(wantID), EmailAddresses: []string{"a@example.org"}}), certs.ErrCSRExtraSAN},
		{"two URIs", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris(wantID, "spiffe://example.org/ns/shop/sa/db")}), certs.ErrCSRExtraSAN},
		{"same URI twice", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris(wantID, wantID)}), certs.ErrCSRExtraSAN},
		{"otherName SAN", makeCSR(t, keyP256, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{mustExt(t, oidSAN, []asn1.RawValue{uriName, otherName})}}), certs.ErrCSRExtraSAN},
		{"no SAN", makeCSR(t, keyP256, &x509.CertificateRequest{Subject: pkix.Name{CommonName: wantID}}), certs.ErrCSRIdentity},
		{"wrong identity", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris("spiffe://example.org/ns/shop/sa/db")}), certs.ErrCSRIdentity},
		{"other trust domain", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris("spiffe://other.org/ns/shop/sa/web")}), certs.ErrCSRIdentity},
		{"not a SPIFFE URI", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris("https://example.org/ns/shop/sa/web")}), certs.ErrCSRIdentity},
		{"SPIFFE URI with query", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris(wantID + "?x=1")}), certs.ErrCSRIdentity},
		{"prefix of the identity", makeCSR(t, keyP256, &x509.CertificateRequest{URIs: uris("spiffe://example.org/ns/shop")}), certs.ErrCSRIdentity},
	}
	sentinels := []error{certs.ErrCSRMalformed, certs.ErrCSRSignature, certs.ErrCSRIdentity, certs.ErrCSRExtraSAN, certs.ErrCSRCA, certs.ErrWeakKey}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := certs.ValidateCSR(tt.csr, want)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("ValidateCSR: %v", err)
				}
				if len(csr.URIs) != 1 || csr.URIs[0].String() != wantID {
					t.Fatalf("URIs = %v", csr.URIs)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("ValidateCSR error = %v, want %v", err, tt.want)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("error %v also wraps %v", err, s)
				}
			}
			if !strings.HasPrefix(err.Error(), "certs: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestValidateCSRZeroWant(t *testing.T) {
	key, _ := certs.GenerateKey()
	csr, err := certs.NewCSR(key, spiffeid.RequireFromString("spiffe://example.org/ns/a/sa/b"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certs.ValidateCSR(csr, spiffeid.ID{}); !errors.Is(err, certs.ErrCSRIdentity) {
		t.Fatalf("zero want: %v", err)
	}
}

func TestNewCSR(t *testing.T) {
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if key.Curve != elliptic.P256() {
		t.Errorf("GenerateKey curve = %s", key.Curve.Params().Name)
	}
	id := mustWorkloadID(t, td, "shop", "web")
	der, err := certs.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.ValidateCSR(der, id)
	if err != nil {
		t.Fatalf("own CSR does not validate: %v", err)
	}
	if !key.PublicKey.Equal(csr.PublicKey) {
		t.Error("CSR public key differs")
	}
	if _, err := certs.NewCSR(key, spiffeid.ID{}); !errors.Is(err, certs.ErrInvalidID) {
		t.Errorf("NewCSR(zero ID) = %v", err)
	}
	if _, err := certs.NewCSR(nil, id); err == nil {
		t.Error("NewCSR(nil key) succeeded")
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func certDER(t testing.TB) []byte {
	t.Helper()
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td})
	return ca.Root().Raw
}

func FuzzValidateCSR(f *testing.F) {
	want := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/web")
	key, err := certs.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	good, err := certs.NewCSR(key, want)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(makeCSR(f, key, &x509.CertificateRequest{URIs: uris(want.String()), DNSNames: []string{"x"}}))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, err := certs.ValidateCSR(der, want)
		if err != nil {
			if csr != nil {
				t.Fatal("non-nil CSR with error")
			}
			if !strings.HasPrefix(err.Error(), "certs: ") {
				t.Fatalf("error %q lacks prefix", err)
			}
			return
		}
		// Anything accepted names exactly want, nothing else, and is self-signed.
		if len(csr.URIs) != 1 || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
			t.Fatalf("accepted CSR with SANs %v %v %v %v", csr.URIs, csr.DNSNames, csr.IPAddresses, csr.EmailAddresses)
		}
		if got, err := spiffeid.FromURI(csr.URIs[0]); err != nil || got != want {
			t.Fatalf("accepted CSR for %v (%v)", csr.URIs[0], err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted CSR with bad signature: %v", err)
		}
	})
}
