package identity_test

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/controlplane/identity"
	"minimesh/controlplane/store"
)

const td = "minimesh.local"

type env struct {
	t     *testing.T
	clock *certstest.Clock
	st    *store.Store
	ca    *certs.CA
	auth  *identity.Authority
}

// newEnv is a real Authority on a real bbolt file and a real CA, all on one
// manual clock.
func newEnv(t *testing.T, limits identity.SignLimits) *env {
	t.Helper()
	clock := certstest.NewClock(time.Now().Truncate(time.Second))
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "meshd.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: spiffeid.RequireTrustDomainFromString(td), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := identity.New(identity.Config{Store: st, CA: ca, Limits: limits, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, clock: clock, st: st, ca: ca, auth: auth}
}

func webID() spiffeid.ID { return spiffeid.RequireFromString("spiffe://" + td + "/ns/default/sa/web") }

func (e *env) csr(id spiffeid.ID) (crypto.Signer, []byte) {
	e.t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		e.t.Fatal(err)
	}
	der, err := certs.NewCSR(key, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return key, der
}

func (e *env) token(uses uint32) string {
	e.t.Helper()
	_, secret, err := e.auth.CreateToken(identity.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: uses, TTL: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	return secret
}

func (e *env) bootstrap(instance string) *identity.Issued {
	e.t.Helper()
	_, csr := e.csr(webID())
	is, err := e.auth.Bootstrap(e.token(1), csr, instance)
	if err != nil {
		e.t.Fatalf("Bootstrap as %s: %v", instance, err)
	}
	return is
}

func (e *env) renew(leaf *x509.Certificate, claimed string) (*identity.Issued, error) {
	_, csr := e.csr(webID())
	return e.auth.Renew(webID(), leaf, csr, claimed)
}

func (e *env) revokeInstance(instance string) {
	e.t.Helper()
	err := e.st.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableProxies, &store.Proxy{InstanceID: instance, SPIFFEID: webID().String(), Service: "web", Revoked: true})
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func TestBootstrapBindsTheInstanceAndRenewKeepsIt(t *testing.T) {
	e := newEnv(t, identity.SignLimits{})
	for _, bad := range []string{"", "Web-1", "-web", "web_1"} {
		_, csr := e.csr(webID())
		if _, err := e.auth.Bootstrap(e.token(1), csr, bad); !errors.Is(err, identity.ErrBadRequest) {
			t.Errorf("Bootstrap with instance_id %q: %v, want ErrBadRequest", bad, err)
		}
	}
	a := e.bootstrap("web-a")
	if got := certs.InstanceID(a.Chain[0]); got != "web-a" {
		t.Fatalf("bootstrapped SVID carries instance %q, want web-a", got)
	}
	if len(a.Chain[0].URIs) != 1 || len(a.Chain[0].DNSNames)+len(a.Chain[0].IPAddresses)+len(a.Chain[0].EmailAddresses) != 0 {
		t.Fatalf("SANs changed: %v", a.Chain[0].URIs)
	}
	// Claiming another instance is refused and signs nothing.
	if _, err := e.renew(a.Chain[0], "web-b"); !errors.Is(err, identity.ErrBadRequest) {
		t.Fatalf("renew as web-a claiming web-b: %v, want ErrBadRequest", err)
	}
	for _, claimed := range []string{"", "web-a"} {
		r, err := e.renew(a.Chain[0], claimed)
		if err != nil {
			t.Fatalf("renew claiming %q: %v", claimed, err)
		}
		if got := certs.InstanceID(r.Chain[0]); got != "web-a" || r.Instance != "web-a" {
			t.Fatalf("renewed SVID carries instance %q, want web-a", got)
		}
	}
	certsOf := 0
	_ = e.st.View(func(r *store.Reader) error {
		recs, _ := r.List(store.TableCertificates, "id")
		for _, rec := range recs {
			if c := rec.(*store.Certificate); c.InstanceID != "web-a" {
				t.Errorf("certificate %s recorded for instance %q", c.Serial, c.InstanceID)
			}
			certsOf++
		}
		return nil
	})
	if certsOf != 3 {
		t.Fatalf("%d certificates recorded, want 3 (bootstrap and two renewals)", certsOf)
	}
}

func TestRevocationCannotBeDodged(t *testing.T) {
	e := newEnv(t, identity.SignLimits{})
	a := e.bootstrap("web-a")
	e.revokeInstance("web-a")
	for _, claimed := range []string{"", "web-a", "web-new"} {
		if _, err := e.renew(a.Chain[0], claimed); err == nil {
			t.Errorf("a revoked instance's certificate renewed claiming %q", claimed)
		} else if claimed != "web-new" && !errors.Is(err, identity.ErrRevoked) {
			t.Errorf("renew claiming %q: %v, want ErrRevoked", claimed, err)
		}
	}
	_, csr := e.csr(webID())
	if _, err := e.auth.Bootstrap(e.token(1), csr, "web-a"); !errors.Is(err, identity.ErrRevoked) {
		t.Errorf("Bootstrap as the revoked instance: %v, want ErrRevoked", err)
	}

	// A certificate revoked by serial.
	b := e.bootstrap("web-b")
	err := e.st.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableRevocations, &store.Revocation{Serial: b.Chain[0].SerialNumber.Text(16), SPIFFEID: webID().String(), NotAfter: b.Chain[0].NotAfter})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.renew(b.Chain[0], ""); !errors.Is(err, identity.ErrRevoked) {
		t.Errorf("renew with a serial-revoked certificate: %v, want ErrRevoked", err)
	}

	// A certificate from before instance binding, recorded as issued to a
	// revoked instance.
	legacy := e.legacy("web-c")
	e.revokeInstance("web-c")
	if _, err := e.renew(legacy, ""); !errors.Is(err, identity.ErrRevoked) {
		t.Errorf("renew with an unbound certificate of a revoked instance: %v, want ErrRevoked", err)
	}

	// A denied identity.
	d := e.bootstrap("web-d")
	if err := e.st.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableDenials, &store.Denial{SPIFFEID: webID().String()})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.renew(d.Chain[0], ""); !errors.Is(err, identity.ErrRevoked) {
		t.Errorf("renew of a denied identity: %v, want ErrRevoked", err)
	}
}

// legacy issues a certificate without an instance, as meshd did before
// instance binding, and records it (with instance when not empty).
func (e *env) legacy(recorded string) *x509.Certificate {
	e.t.Helper()
	svid, err := e.ca.IssueSVID(webID(), 0)
	if err != nil {
		e.t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if recorded != "" {
		err = e.st.Update(func(tx *store.Txn) error {
			return tx.Put(store.TableCertificates, &store.Certificate{Serial: leaf.SerialNumber.Text(16), SPIFFEID: webID().String(), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, IssuedBy: "bootstrap", InstanceID: recorded})
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return leaf
}

func TestUnboundCertificateRenewsForItsRecordedInstanceOnly(t *testing.T) {
	e := newEnv(t, identity.SignLimits{})
	recorded := e.legacy("web-old")
	if _, err := e.renew(recorded, "web-other"); !errors.Is(err, identity.ErrBadRequest) {
		t.Fatalf("unbound certificate claiming another instance: %v, want ErrBadRequest", err)
	}
	r, err := e.renew(recorded, "web-old")
	if err != nil {
		t.Fatal(err)
	}
	if got := certs.InstanceID(r.Chain[0]); got != "web-old" {
		t.Fatalf("renewed SVID carries %q, want the recorded web-old", got)
	}
	if _, err := e.renew(e.legacy(""), "web-anything"); !errors.Is(err, identity.ErrUnbound) {
		t.Fatalf("unbound, unrecorded certificate: %v, want ErrUnbound", err)
	}
}

func TestSigningIsRateLimitedPerInstanceNotPerReplica(t *testing.T) {
	e := newEnv(t, identity.SignLimits{})
	// 500 replicas of one identity renew once each, all at the same instant.
	leaves := make([]*x509.Certificate, 500)
	for i := range leaves {
		svid, err := e.ca.IssueSVID(webID(), 0, certs.WithInstance(fmt.Sprintf("web-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		leaves[i] = svid.Certificates[0]
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(leaves))
	sem := make(chan struct{}, 8)
	for _, leaf := range leaves {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := e.renew(leaf, ""); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("one of 500 replicas renewing once was refused: %v", err)
	}

	// One instance renewing in a loop: its burst, then a refusal with a delay.
	leaf := leaves[0] // renewed once already
	var rl *identity.RateLimitedError
	for i := 1; ; i++ {
		_, err := e.renew(leaf, "")
		if err == nil {
			if i > identity.DefaultInstanceBurst {
				t.Fatalf("renewal %d of one instance at one instant was signed; burst is %d", i, identity.DefaultInstanceBurst)
			}
			continue
		}
		if !errors.As(err, &rl) || !errors.Is(err, identity.ErrRateLimited) {
			t.Fatalf("renewal %d: %v, want a RateLimitedError", i, err)
		}
		if i != identity.DefaultInstanceBurst {
			t.Fatalf("refused at renewal %d, want after the burst of %d", i, identity.DefaultInstanceBurst)
		}
		break
	}
	if rl.Scope != "instance" || rl.RetryAfter <= 0 || rl.RetryAfter > identity.DefaultInstanceEvery {
		t.Fatalf("refusal %+v, want scope instance and a delay in (0, %s]", rl, identity.DefaultInstanceEvery)
	}
	// Another instance of the same identity is not held back by it.
	if _, err := e.renew(leaves[1], ""); err != nil {
		t.Fatalf("another instance: %v", err)
	}
	e.clock.Add(rl.RetryAfter)
	if _, err := e.renew(leaf, ""); err != nil {
		t.Fatalf("after the retry delay: %v", err)
	}
}

func TestIdentityCeilingRefundsTheInstance(t *testing.T) {
	e := newEnv(t, identity.SignLimits{IdentityRate: 0.001, IdentityBurst: 2, InstanceRate: 0.0001, InstanceBurst: 2})
	a := e.bootstrap("web-a") // web-a: 1 left; the identity: 1 left
	e.bootstrap("web-b")      // the identity: 0 left
	_, err := e.renew(a.Chain[0], "")
	var rl *identity.RateLimitedError
	if !errors.As(err, &rl) || rl.Scope != "identity" || rl.RetryAfter <= 0 {
		t.Fatalf("third signature of the identity: %v, want an identity rate limit", err)
	}
	// Over the identity's delay web-a's own bucket gains only a tenth of a
	// token: the renewal below passes only if the refusal gave back the
	// token it had taken from web-a.
	e.clock.Add(rl.RetryAfter)
	if _, err := e.renew(a.Chain[0], ""); err != nil {
		t.Fatalf("after the identity's delay: %v", err)
	}
}

func TestTokenRecordStaysSmallAndRepeatsStillWork(t *testing.T) {
	e := newEnv(t, identity.SignLimits{})
	tok := e.token(40)
	var key crypto.Signer
	var first *identity.Issued
	for i := 0; i < 40; i++ {
		k, csr := e.csr(webID())
		is, err := e.auth.Bootstrap(tok, csr, fmt.Sprintf("web-%d", i))
		if err != nil {
			t.Fatalf("use %d: %v", i, err)
		}
		if i == 0 {
			key, first = k, is
		}
	}
	toks, err := e.auth.ListTokens()
	if err != nil || len(toks) != 1 {
		t.Fatalf("tokens %v, %v", toks, err)
	}
	b, _ := json.Marshal(toks[0])
	if len(b) > 1024 {
		t.Fatalf("the token's record is %d bytes after 40 uses; it must not grow with uses", len(b))
	}
	// The first key asks again (its reply was lost): the same SVID, no use.
	csr, err := certs.NewCSR(key, webID())
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.auth.Bootstrap(tok, csr, "web-0")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Chain[0].Equal(first.Chain[0]) {
		t.Fatal("a repeat with the same key got another SVID")
	}
	if _, err := e.auth.Bootstrap(tok, csr, "web-zzz"); !errors.Is(err, identity.ErrBadRequest) {
		t.Fatalf("a repeat with the same key as another instance: %v, want ErrBadRequest", err)
	}
	if toks, _ := e.auth.ListTokens(); toks[0].UsesLeft != 0 {
		t.Fatalf("uses left %d, want 0", toks[0].UsesLeft)
	}
}

func TestPruneDropsExpiredRecordsAndKeepsTheRest(t *testing.T) {
	e := newEnv(t, identity.SignLimits{})
	old := e.bootstrap("web-old")
	oldSerial := old.Chain[0].SerialNumber.Text(16)
	if err := e.st.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableRevocations, &store.Revocation{Serial: oldSerial, NotAfter: old.Chain[0].NotAfter})
	}); err != nil {
		t.Fatal(err)
	}
	// A data file from before TableIssuances: a token carrying its chains.
	legacyTok := &store.Token{ID: "0123456789ab", SPIFFEID: webID().String(), Namespace: "default", ServiceAccount: "web",
		ExpiresAt: e.clock.Now().Add(time.Hour), Uses: 2, UsesLeft: 1,
		Issued: map[string]store.Issuance{"somekeyhash": {Serial: oldSerial, Chain: [][]byte{old.Chain[0].Raw, old.Chain[1].Raw}}}}
	if err := e.st.Update(func(tx *store.Txn) error { return tx.Put(store.TableTokens, legacyTok) }); err != nil {
		t.Fatal(err)
	}

	e.clock.Add(40 * time.Minute)
	fresh := e.bootstrap("web-new")
	// Nothing has expired: only the legacy token's map moves out.
	if n, err := e.auth.Prune(); err != nil || n != (identity.Pruned{Tokens: 1}) {
		t.Fatalf("prune before anything expired: %+v, %v", n, err)
	}
	e.clock.Add(30 * time.Minute) // old has expired, fresh has not
	n, err := e.auth.Prune()
	if err != nil {
		t.Fatal(err)
	}
	// The old certificate, its revocation, its issuance and the one moved
	// out of the legacy token.
	if n != (identity.Pruned{Certificates: 1, Revocations: 1, Issuances: 2}) {
		t.Fatalf("pruned %+v", n)
	}
	_ = e.st.View(func(r *store.Reader) error {
		if _, err := r.Get(store.TableCertificates, oldSerial); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("expired certificate record kept: %v", err)
		}
		if _, err := r.Get(store.TableRevocations, oldSerial); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("expired revocation kept: %v", err)
		}
		if _, err := r.Get(store.TableCertificates, fresh.Chain[0].SerialNumber.Text(16)); err != nil {
			t.Errorf("unexpired certificate record pruned: %v", err)
		}
		rec, err := r.Get(store.TableTokens, legacyTok.ID)
		if err != nil || len(rec.(*store.Token).Issued) != 0 || rec.(*store.Token).UsesLeft != 1 {
			t.Errorf("legacy token after prune: %+v, %v", rec, err)
		}
		issuances, _ := r.List(store.TableIssuances, "id")
		for _, rec := range issuances {
			if !e.clock.Now().Before(rec.(*store.TokenIssuance).NotAfter) {
				t.Errorf("expired issuance %s kept", rec.Key())
			}
		}
		if len(issuances) != 1 {
			t.Errorf("%d issuances, want 1 (web-new's)", len(issuances))
		}
		return nil
	})
	if err := e.st.CheckConsistency(); err != nil {
		t.Fatal(err)
	}
}

// rotatingCA moves the CA one rotation step at each Current: an issuance
// that asked for the CA more than once would sign with one and pin or
// bundle another.
type rotatingCA struct {
	mu  sync.Mutex
	cur *certs.CA
}

func (r *rotatingCA) Current() *certs.CA {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cur
	next, err := c.PrepareRootRotation()
	if err != nil {
		next, err = c.ActivateNextRoot()
	}
	if err == nil {
		r.cur = next
	}
	return c
}

func TestOneCAValuePerIssuance(t *testing.T) {
	e := newEnv(t, identity.SignLimits{})
	rca := &rotatingCA{cur: e.ca}
	auth, err := identity.New(identity.Config{Store: e.st, CA: rca, Clock: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, is *identity.Issued) {
		t.Helper()
		var pin string
		_ = e.st.View(func(r *store.Reader) error {
			rec, err := r.Get(store.TableCertificates, is.Chain[0].SerialNumber.Text(16))
			if err == nil {
				pin = rec.(*store.Certificate).RootPin
			}
			return err
		})
		_, chains, err := certs.VerifyPeerCertificates(is.Chain, is.Bundle, e.clock.Now())
		if err != nil {
			t.Fatalf("%s: the SVID does not verify against the bundle returned with it: %v", what, err)
		}
		root := chains[len(chains)-1]
		if certs.SPKIPin(root) != pin {
			t.Fatalf("%s: recorded root pin %s, the SVID chains to %s", what, pin, certs.SPKIPin(root))
		}
	}
	_, secret, err := auth.CreateToken(identity.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		_, csr := e.csr(webID())
		is, err := auth.Bootstrap(secret, csr, fmt.Sprintf("web-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		check("bootstrap", is)
		_, csr = e.csr(webID())
		r, err := auth.Renew(webID(), is.Chain[0], csr, "")
		if err != nil {
			t.Fatal(err)
		}
		check("renew", r)
	}
}
