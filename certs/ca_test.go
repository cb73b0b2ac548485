package certs_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func TestNewCA(t *testing.T) {
	clock := certstest.NewClock(t0)
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock})
	root, inter := ca.Root(), ca.Intermediate()

	if ca.TrustDomain() != td {
		t.Errorf("TrustDomain = %v", ca.TrustDomain())
	}
	if err := root.CheckSignatureFrom(root); err != nil || !bytes.Equal(root.RawIssuer, root.RawSubject) {
		t.Errorf("root is not self-signed: %v", err)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate not signed by root: %v", err)
	}
	for name, c := range map[string]*x509.Certificate{"root": root, "intermediate": inter} {
		if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("%s: IsCA=%v KeyUsage=%v", name, c.IsCA, c.KeyUsage)
		}
		if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
			t.Errorf("%s: URIs = %v, want [spiffe://example.org]", name, c.URIs)
		}
		if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want ECDSA P-256", name, c.PublicKey)
		}
		if !c.NotBefore.Equal(t0.Add(-certs.DefaultBackdate)) {
			t.Errorf("%s: NotBefore = %v", name, c.NotBefore)
		}
	}
	if inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("intermediate path length = %d (zero=%v), want 0", inter.MaxPathLen, inter.MaxPathLenZero)
	}
	if !slices.Equal(inter.PermittedURIDomains, []string{"example.org"}) {
		t.Errorf("intermediate PermittedURIDomains = %v", inter.PermittedURIDomains)
	}
	if !root.NotAfter.Equal(t0.Add(certs.DefaultRootTTL)) || !inter.NotAfter.Equal(t0.Add(certs.DefaultIntermediateTTL)) {
		t.Errorf("NotAfter root %v, intermediate %v", root.NotAfter, inter.NotAfter)
	}
	b := ca.Bundle()
	if b.TrustDomain() != td || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(root) {
		t.Errorf("Bundle = %v", b.X509Authorities())
	}
	b.RemoveX509Authority(root)
	if ca.Bundle().Empty() {
		t.Error("modifying Bundle()'s result changed the CA")
	}

	sum := sha256.Sum256(root.RawSubjectPublicKeyInfo)
	if got, want := ca.RootPin(), "sha256:"+hex.EncodeToString(sum[:]); got != want {
		t.Errorf("RootPin = %s, want %s", got, want)
	}
	if pin, err := certs.ParsePin(ca.RootPin()); err != nil || !bytes.Equal(pin, sum[:]) {
		t.Errorf("ParsePin(RootPin) = %x, %v", pin, err)
	}
	if other := mustNewCA(t, certs.CAConfig{TrustDomain: td}); other.RootPin() == ca.RootPin() {
		t.Error("two CAs share a root pin")
	}
}

func TestCAConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  certs.CAConfig
	}{
		{"no trust domain", certs.CAConfig{}},
		{"negative SVID TTL", certs.CAConfig{TrustDomain: td, SVIDTTL: -time.Second}},
		{"negative root TTL", certs.CAConfig{TrustDomain: td, RootTTL: -time.Second}},
		{"intermediate outlives root", certs.CAConfig{TrustDomain: td, RootTTL: time.Hour, IntermediateTTL: 2 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := certs.NewCA(tt.cfg); !errors.Is(err, certs.ErrInvalidConfig) {
				t.Fatalf("NewCA = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

// checkSVIDLeaf asserts every rule an issued X509-SVID must follow.
func checkSVIDLeaf(t *testing.T, ca *certs.CA, chain []*x509.Certificate, id spiffeid.ID, now time.Time, life time.Duration) {
	t.Helper()
	if len(chain) != 2 || !chain[1].Equal(ca.Intermediate()) {
		t.Fatalf("chain has %d certs, want [leaf, intermediate]", len(chain))
	}
	leaf := chain[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("URIs = %v, want exactly [%s]", leaf.URIs, id)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("extra SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("IsCA=%v BasicConstraintsValid=%v", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want DigitalSignature only", leaf.KeyUsage)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if !leaf.NotAfter.Equal(now.Add(life)) {
		t.Errorf("NotAfter = %v, want %v", leaf.NotAfter, now.Add(life))
	}
	if !leaf.NotBefore.Equal(now.Add(-certs.DefaultBackdate)) {
		t.Errorf("NotBefore = %v, want %v", leaf.NotBefore, now.Add(-certs.DefaultBackdate))
	}
	if len(leaf.SubjectKeyId) == 0 || !bytes.Equal(leaf.AuthorityKeyId, ca.Intermediate().SubjectKeyId) {
		t.Errorf("SubjectKeyId %x, AuthorityKeyId %x", leaf.SubjectKeyId, leaf.AuthorityKeyId)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v is not a positive 128-bit number", leaf.SerialNumber)
	}
	// Chains to the root, for TLS clients and servers alike.
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots: pool(ca.Root()), Intermediates: pool(chain[1:]...),
			CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{eku},
		}); err != nil {
			t.Errorf("leaf does not verify to root for %v: %v", eku, err)
		}
	}
	got, _, err := x509svid.Verify(chain, ca.Bundle(), x509svid.WithTime(now))
	if err != nil || got != id {
		t.Errorf("x509svid.Verify = %v, %v", got, err)
	}
}

func pool(cs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

func TestSignCSR(t *testing.T) {
	clock := certstest.NewClock(t0)
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock})
	id := mustWorkloadID(t, td, "shop", "web")
	key, _ := certs.GenerateKey()
	csr, err := certs.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Minute)
	now := clock.Now()

	chain, err := ca.SignCSR(csr, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkSVIDLeaf(t, ca, chain, id, now, time.Hour)
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		t.Error("leaf does not carry the CSR's key")
	}
	// go-spiffe accepts the result as an SVID with our key.
	svid, err := x509svid.ParseRaw(chain[0].Raw, mustPKCS8(t, key))
	if err != nil || svid.ID != id {
		t.Errorf("x509svid.ParseRaw = %v, %v", svid, err)
	}

	chain5, err := ca.SignCSR(csr, id, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	checkSVIDLeaf(t, ca, chain5, id, now, 5*time.Minute)
	if chain5[0].SerialNumber.Cmp(chain[0].SerialNumber) == 0 {
		t.Error("two SVIDs share a serial")
	}

	refusals := []struct {
		name string
		csr  []byte
		id   spiffeid.ID
		ttl  time.Duration
		want error
	}{
		{"CSR for another ID", csr, mustWorkloadID(t, td, "shop", "db"), 0, certs.ErrCSRIdentity},
		{"ID of another trust domain", csr, mustWorkloadID(t, otherTD, "shop", "web"), 0, certs.ErrInvalidID},
		{"trust domain ID without path", csr, td.ID(), 0, certs.ErrInvalidID},
		{"zero ID", csr, spiffeid.ID{}, 0, certs.ErrInvalidID},
		{"garbage CSR", []byte("x"), id, 0, certs.ErrCSRMalformed},
		{"negative TTL", csr, id, -time.Second, certs.ErrInvalidConfig},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			if chain, err := ca.SignCSR(tt.csr, tt.id, tt.ttl); !errors.Is(err, tt.want) || chain != nil {
				t.Fatalf("SignCSR = %d certs, %v; want %v", len(chain), err, tt.want)
			}
		})
	}
}

func TestIssueSVID(t *testing.T) {
	clock := certstest.NewClock(t0)
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock, SVIDTTL: 10 * time.Minute})
	id := certs.MeshdID(td)
	svid, err := ca.IssueSVID(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != id || svid.PrivateKey == nil {
		t.Fatalf("SVID %v key %T", svid.ID, svid.PrivateKey)
	}
	checkSVIDLeaf(t, ca, svid.Certificates, id, t0, 10*time.Minute) // the configured SVIDTTL
	if !publicKeyEqual(svid.PrivateKey.Public(), svid.Certificates[0].PublicKey) {
		t.Error("private key does not match the leaf")
	}

	serving, err := ca.IssueServingSVID(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(serving.Certificates) != 3 || !serving.Certificates[2].Equal(ca.Root()) {
		t.Fatalf("serving chain has %d certs, want [leaf, intermediate, root]", len(serving.Certificates))
	}
	checkSVIDLeaf(t, ca, serving.Certificates[:2], id, t0, time.Hour)

	if _, err := ca.IssueSVID(mustWorkloadID(t, otherTD, "a", "b"), 0); !errors.Is(err, certs.ErrInvalidID) {
		t.Errorf("IssueSVID(other trust domain) = %v", err)
	}
}

func TestSVIDLifetimeClippedToIntermediate(t *testing.T) {
	clock := certstest.NewClock(t0)
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock, IntermediateTTL: 2 * time.Hour})
	id := mustWorkloadID(t, td, "shop", "web")
	clock.Add(90 * time.Minute)
	svid, err := ca.IssueSVID(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := svid.Certificates[0].NotAfter; !got.Equal(ca.Intermediate().NotAfter) {
		t.Errorf("NotAfter = %v, want clipped to the intermediate's %v", got, ca.Intermediate().NotAfter)
	}
	clock.Add(30 * time.Minute) // exactly the intermediate's NotAfter
	if _, err := ca.IssueSVID(id, time.Hour); !errors.Is(err, certs.ErrCAExpired) {
		t.Errorf("IssueSVID after the intermediate expired = %v, want ErrCAExpired", err)
	}
}

func TestIntermediateIsNameConstrained(t *testing.T) {
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td})
	_, interKey := stateKeys(t, ca)
	// Even with the intermediate's key, a certificate for another trust domain
	// does not verify to our root.
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
		URIs:     []*url.URL{mustWorkloadID(t, otherTD, "shop", "web").URL()},
	}
	key, _ := certs.GenerateKey()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Intermediate(), key.Public(), interKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool(ca.Root()), Intermediates: pool(ca.Intermediate()), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	var inv x509.CertificateInvalidError
	if !errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
		t.Fatalf("Verify = %v, want CANotAuthorizedForThisName", err)
	}
}

func TestCAConcurrentSigning(t *testing.T) {
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td})
	id := mustWorkloadID(t, td, "shop", "web")
	const n = 16
	serials := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			svid, err := ca.IssueSVID(id, 0)
			if err != nil {
				t.Error(err)
				return
			}
			serials[i] = svid.Certificates[0].SerialNumber.String()
		})
	}
	wg.Wait()
	slices.Sort(serials)
	if len(slices.Compact(serials)) != n {
		t.Errorf("serials not unique: %v", serials)
	}
}

func TestMarshalStateLoadCA(t *testing.T) {
	clock := certstest.NewClock(t0)
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td, Clock: clock})
	state, err := ca.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for rest := state; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		types = append(types, b.Type)
	}
	if want := []string{"CERTIFICATE", "PRIVATE KEY", "CERTIFICATE", "PRIVATE KEY"}; !slices.Equal(types, want) {
		t.Fatalf("state blocks = %v, want %v", types, want)
	}

	for _, cfgTD := range []spiffeid.TrustDomain{td, {}} {
		loaded, err := certs.LoadCA(certs.CAConfig{TrustDomain: cfgTD, Clock: clock}, state)
		if err != nil {
			t.Fatalf("LoadCA(td=%q): %v", cfgTD, err)
		}
		if loaded.TrustDomain() != td || !loaded.Root().Equal(ca.Root()) || !loaded.Intermediate().Equal(ca.Intermediate()) || loaded.RootPin() != ca.RootPin() {
			t.Fatalf("loaded CA differs")
		}
		// The loaded CA signs with the same keys: its SVIDs verify against the original bundle.
		id := mustWorkloadID(t, td, "shop", "web")
		svid, err := loaded.IssueSVID(id, 0)
		if err != nil {
			t.Fatal(err)
		}
		checkSVIDLeaf(t, ca, svid.Certificates, id, t0, time.Hour)
	}
}

func TestLoadCARejects(t *testing.T) {
	ca := mustNewCA(t, certs.CAConfig{TrustDomain: td})
	other := mustNewCA(t, certs.CAConfig{TrustDomain: td})
	otherTDCA := mustNewCA(t, certs.CAConfig{TrustDomain: otherTD})
	blocks := stateBlocks(t, ca)
	otherBlocks := stateBlocks(t, other)
	join := func(bs ...*pem.Block) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, pem.EncodeToMemory(b)...)
		}
		return out
	}
	leaf := certstest.SVID(t, ca, "spiffe://example.org/ns/a/sa/b")
	leafKey := &pem.Block{Type: "PRIVATE KEY", Bytes: mustPKCS8(t, leaf.PrivateKey)}
	leafCert := &pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificates[0].Raw}

	tests := []struct {
		name  string
		td    spiffeid.TrustDomain
		state []byte
	}{
		{"root key of another CA", td, join(blocks[0], otherBlocks[1], blocks[2], blocks[3])},
		{"intermediate key of another CA", td, join(blocks[0], blocks[1], blocks[2], otherBlocks[3])},
		{"intermediate of another root", td, join(blocks[0], blocks[1], otherBlocks[2], otherBlocks[3])},
		{"wrong trust domain", otherTD, join(blocks...)},
		{"other CA's state for our trust domain", td, mustState(t, otherTDCA)},
		{"leaf as intermediate", td, join(blocks[0], blocks[1], leafCert, leafKey)},
		{"leaf as root", td, join(leafCert, leafKey, blocks[2], blocks[3])},
		{"three blocks", td, join(blocks[:3]...)},
		{"five blocks", td, join(append(blocks, blocks[0])...)},
		{"keys first", td, join(blocks[1], blocks[0], blocks[3], blocks[2])},
		{"garbage", td, []byte("not a CA")},
		{"empty", td, nil},
		{"corrupt certificate", td, join(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}, blocks[1], blocks[2], blocks[3])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := certs.LoadCA(certs.CAConfig{TrustDomain: tt.td}, tt.state); !errors.Is(err, certs.ErrInvalidCAState) {
				t.Fatalf("LoadCA = %v, want ErrInvalidCAState", err)
			}
		})
	}
}

func stateBlocks(t *testing.T, ca *certs.CA) []*pem.Block {
	t.Helper()
	var out []*pem.Block
	for rest := mustState(t, ca); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		out = append(out, b)
	}
}

func mustState(t *testing.T, ca *certs.CA) []byte {
	t.Helper()
	s, err := ca.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stateKeys digs the CA's private keys out of its state, as an attacker
// who stole the state file could.
func stateKeys(t *testing.T, ca *certs.CA) (root, inter *ecdsa.PrivateKey) {
	t.Helper()
	bs := stateBlocks(t, ca)
	parse := func(b *pem.Block) *ecdsa.PrivateKey {
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return k.(*ecdsa.PrivateKey)
	}
	return parse(bs[1]), parse(bs[3])
}

func mustPKCS8(t testing.TB, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func publicKeyEqual(a, b any) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
