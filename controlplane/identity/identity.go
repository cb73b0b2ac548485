package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/controlplane/kube"
	"minimesh/controlplane/store"
)

const (
	// DefaultTokenTTL is a join token's lifetime when none is asked for.
	DefaultTokenTTL = 10 * time.Minute
	// MaxTokenTTL caps a join token's lifetime.
	MaxTokenTTL = 7 * 24 * time.Hour
	// MaxTokenUses caps a join token's use count.
	MaxTokenUses = 10000

	tokenIDBytes     = 6
	tokenSecretBytes = 16
)

// CA hands out the CA in force. An issuance takes it once and uses that one
// immutable value to sign, to record the root pin and to return the bundle,
// so a rotation step cannot interleave with it. *certs.CA implements it
// (returning itself).
type CA interface {
	Current() *certs.CA
}

var _ CA = (*certs.CA)(nil)

// Config configures an Authority.
type Config struct {
	Store *store.Store
	CA    CA
	// SVIDTTL is the lifetime of issued SVIDs; 0 means the CA's default.
	SVIDTTL time.Duration
	// Limits bound how fast SVIDs are signed (see SignLimits).
	Limits SignLimits
	// PruneEvery is how often PruneIfDue prunes expired records. Default 1m.
	PruneEvery time.Duration
	// RenewQueue bounds the renewal records kept while etcd is unreachable
	// (default DefaultRenewQueue); FlushEvery is how often RunRecorder
	// tries to write them (default DefaultFlushEvery).
	RenewQueue int
	FlushEvery time.Duration
	// Registerer, when set, gets the renewal queue's metrics.
	Registerer prometheus.Registerer
	// Reviewer reviews Kubernetes service-account tokens
	// (BootstrapSAToken, and Renew of the SVIDs it issues); nil when meshd
	// has no Kubernetes API access: such tokens are refused.
	Reviewer kube.TokenReviewer
	Clock    certs.Clock
	Logger   *slog.Logger
}

// Authority issues tokens and SVIDs.
type Authority struct {
	cfg    Config
	limits *signLimiter
	queue  *renewQueue

	pruneMu   sync.Mutex
	lastPrune time.Time
}

// New builds an Authority.
func New(cfg Config) (*Authority, error) {
	if cfg.Store == nil || cfg.CA == nil {
		return nil, errors.New("identity: Config.Store and Config.CA are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PruneEvery <= 0 {
		cfg.PruneEvery = time.Minute
	}
	if cfg.FlushEvery <= 0 {
		cfg.FlushEvery = DefaultFlushEvery
	}
	ttl := cfg.SVIDTTL
	if ttl <= 0 {
		ttl = certs.DefaultSVIDTTL
	}
	q, err := newRenewQueue(cfg.RenewQueue, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Authority{cfg: cfg, limits: newSignLimiter(cfg.Limits.withDefaults(ttl)), queue: q}, nil
}

// TokenRequest asks for a join token.
type TokenRequest struct {
	Namespace      string
	ServiceAccount string
	TTL            time.Duration // 0: DefaultTokenTTL
	Uses           uint32        // 0: 1
	// CAPin is the pin of the root in force, kept with the token so that
	// a rotation can tell which tokens carry an old one.
	CAPin string
}

// CreateToken stores a new token and returns it with its secret form
// "<id>.<secret>", which is never stored.
func (a *Authority) CreateToken(req TokenRequest) (*store.Token, string, error) {
	id, err := certs.WorkloadID(a.cfg.CA.Current().TrustDomain(), req.Namespace, req.ServiceAccount)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if certs.IsReserved(id) {
		return nil, "", fmt.Errorf("%w: %s cannot be issued through a join token", ErrReservedIdentity, id)
	}
	ttl := req.TTL
	switch {
	case ttl == 0:
		ttl = DefaultTokenTTL
	case ttl < 0 || ttl > MaxTokenTTL:
		return nil, "", fmt.Errorf("%w: ttl: must be between 1s and %s, got %s", ErrBadRequest, MaxTokenTTL, ttl)
	}
	uses := req.Uses
	switch {
	case uses == 0:
		uses = 1
	case uses > MaxTokenUses:
		return nil, "", fmt.Errorf("%w: uses: must be at most %d, got %d", ErrBadRequest, MaxTokenUses, uses)
	}
	tokID, err := randomHex(tokenIDBytes)
	if err != nil {
		return nil, "", err
	}
	secret, err := randomHex(tokenSecretBytes)
	if err != nil {
		return nil, "", err
	}
	hash := sha256.Sum256([]byte(secret))
	now := a.cfg.Clock.Now()
	tok := &store.Token{
		ID:             tokID,
		CAPin:          req.CAPin,
		SecretHash:     hash[:],
		Namespace:      req.Namespace,
		ServiceAccount: req.ServiceAccount,
		SPIFFEID:       id.String(),
		CreatedAt:      now,
		ExpiresAt:      now.Add(ttl),
		Uses:           uses,
		UsesLeft:       uses,
	}
	if err := a.cfg.Store.Update(func(tx *store.Txn) error { return tx.Put(store.TableTokens, tok) }); err != nil {
		return nil, "", err
	}
	a.cfg.Logger.Info("join token created", "token_id", tokID, "spiffe_id", id.String(), "ttl", ttl, "uses", uses)
	return tok, tokID + "." + secret, nil
}

// ListTokens returns every token, oldest first.
func (a *Authority) ListTokens() ([]*store.Token, error) {
	var out []*store.Token
	err := a.cfg.Store.View(func(r *store.Reader) error {
		recs, err := r.List(store.TableTokens, "id")
		for _, rec := range recs {
			out = append(out, rec.(*store.Token))
		}
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// RevokeToken makes a token unusable.
func (a *Authority) RevokeToken(id string) error {
	err := a.cfg.Store.Update(func(tx *store.Txn) error {
		rec, err := tx.Get(store.TableTokens, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: token %q", ErrNotFound, id)
		}
		if err != nil {
			return err
		}
		tok := cloneToken(rec.(*store.Token))
		if tok.Revoked {
			return nil
		}
		tok.Revoked = true
		return tx.Put(store.TableTokens, tok)
	})
	if err != nil {
		return err
	}
	// Logged after the commit: an update function may run more than once.
	a.cfg.Logger.Info("join token revoked", "token_id", id)
	return nil
}

// Issued is a signed SVID chain and the bundle to verify peers with.
type Issued struct {
	ID     spiffeid.ID
	Chain  []*x509.Certificate
	Bundle *x509bundle.Bundle
	// Instance is the proxy instance the SVID is bound to.
	Instance string
	// PodUID is the Kubernetes pod the SVID is bound to (service-account
	// token attestation), or "".
	PodUID string
}

// Bootstrap exchanges a join token and a CSR for an SVID bound to
// instanceID (written into its Subject, see certs.WithInstance).
//
// The token is read and checked outside the store transaction, the SVID is
// signed (with one CA value, which also gives the recorded root pin and the
// returned bundle), and only then the transaction re-checks the token (uses
// left, revoked, expiry, a concurrent issuance for the same key) and
// consumes it: a Bootstrap that loses a race discards its certificate, and
// the function passed to Store.Update has no effect but its writes.
func (a *Authority) Bootstrap(token string, csrDER []byte, instanceID string) (*Issued, error) {
	tokID, secret, ok := strings.Cut(token, ".")
	if !ok || len(tokID) != 2*tokenIDBytes || len(secret) != 2*tokenSecretBytes {
		return nil, ErrTokenMalformed
	}
	if err := certs.CheckInstanceID(instanceID); err != nil {
		return nil, fmt.Errorf("%w: instance_id: %w", ErrBadRequest, err)
	}
	var (
		tok     *store.Token
		id      spiffeid.ID
		csr     *certs.CheckedCSR
		keyHash string
		prev    *store.TokenIssuance
	)
	// Read through on a miss: a token made through another meshd replica
	// a moment ago is found (etcd).
	err := a.cfg.Store.ViewFresh(func(r *store.Reader) error {
		var err error
		if tok, err = checkToken(r, tokID, secret); err != nil {
			return err
		}
		if id, err = spiffeid.FromString(tok.SPIFFEID); err != nil {
			return fmt.Errorf("identity: stored token %s: %w", tok.ID, err)
		}
		if err := checkInstanceOwner(r, id, instanceID); err != nil {
			return err
		}
		if err := checkAllowed(r, id, instanceID, ""); err != nil {
			return err
		}
		if csr, err = certs.CheckCSR(csrDER, id); err != nil {
			return fmt.Errorf("%w: %w", ErrCSR, err)
		}
		if keyHash, err = publicKeyHash(csr.PublicKey()); err != nil {
			return fmt.Errorf("%w: %w", ErrCSR, err)
		}
		prev, err = previousIssuance(r, tok, keyHash)
		return err
	})
	if err != nil {
		return nil, err
	}
	ca := a.cfg.CA.Current()
	now := a.cfg.Clock.Now()
	// A retry after a lost reply: the same key gets the same SVID back.
	if is, err := a.repeat(ca, id, tok, prev, instanceID, now); is != nil || err != nil {
		return is, err
	}
	if err := tokenUsable(tok, now); err != nil {
		return nil, err
	}
	if err := a.limits.take(now, id.String(), instanceID); err != nil {
		return nil, err
	}
	chain, err := ca.SignChecked(csr, a.cfg.SVIDTTL, certs.WithInstance(instanceID))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSR, err)
	}
	var won *store.TokenIssuance // set when a concurrent Bootstrap with the same key won
	err = a.cfg.Store.Update(func(tx *store.Txn) error {
		won = nil
		cur, err := checkToken(&tx.Reader, tokID, secret)
		if err != nil {
			return err
		}
		if err := checkAllowed(&tx.Reader, id, instanceID, ""); err != nil {
			return err
		}
		if p, err := previousIssuance(&tx.Reader, cur, keyHash); err != nil {
			return err
		} else if p != nil && p.InstanceID != "" && now.Before(p.NotAfter) {
			if p.InstanceID != instanceID {
				return fmt.Errorf("%w: instance_id: this key was bootstrapped as instance %q, not %q", ErrBadRequest, p.InstanceID, instanceID)
			}
			won = p
			return nil
		}
		if err := tokenUsable(cur, now); err != nil {
			return err
		}
		next := cloneToken(cur)
		next.UsesLeft--
		if err := migrateIssued(tx, next); err != nil {
			return err
		}
		if err := tx.Put(store.TableTokens, next); err != nil {
			return err
		}
		if err := tx.Put(store.TableIssuances, &store.TokenIssuance{
			ID:         store.IssuanceKey(tokID, keyHash),
			TokenID:    tokID,
			KeyHash:    keyHash,
			Serial:     serialHex(chain[0]),
			InstanceID: instanceID,
			NotAfter:   chain[0].NotAfter,
			Chain:      rawChain(chain),
		}); err != nil {
			return err
		}
		return putCertificate(tx, chain[0], id, "bootstrap", tokID, instanceID, ca.RootPin())
	})
	if err != nil {
		return nil, err
	}
	if won != nil {
		// The certificate signed above was never recorded: it is dropped.
		return a.repeat(ca, id, tok, won, instanceID, now)
	}
	a.cfg.Logger.Info("bootstrap: SVID issued", "spiffe_id", id.String(), "serial", serialHex(chain[0]), "instance_id", instanceID, "token_id", tokID)
	return &Issued{ID: id, Chain: chain, Bundle: ca.Bundle(), Instance: instanceID}, nil
}

// repeat answers a Bootstrap whose key already got an SVID from this token:
// that SVID, while it is valid and bound to the same instance. It returns
// nil, nil when there is nothing to repeat.
func (a *Authority) repeat(ca *certs.CA, id spiffeid.ID, tok *store.Token, prev *store.TokenIssuance, instanceID string, now time.Time) (*Issued, error) {
	if prev == nil {
		return nil, nil
	}
	chain, err := certs.ParseCertsDER(prev.Chain)
	if err != nil || !now.Before(chain[0].NotAfter) {
		return nil, nil // unreadable or expired: a new issuance (and use) is needed
	}
	// An issuance from before instance binding has no instance: the same
	// key gets a new, bound certificate for a use.
	bound := certs.InstanceID(chain[0])
	if bound == "" {
		return nil, nil
	}
	if bound != instanceID {
		return nil, fmt.Errorf("%w: instance_id: this key was bootstrapped as instance %q, not %q", ErrBadRequest, bound, instanceID)
	}
	if err := a.cfg.Store.View(func(r *store.Reader) error { return checkAllowed(r, id, bound, prev.Serial) }); err != nil {
		return nil, err
	}
	a.cfg.Logger.Info("bootstrap repeated with the same key; returning the same SVID", "token_id", tok.ID, "serial", prev.Serial, "instance_id", bound)
	return &Issued{ID: id, Chain: chain, Bundle: ca.Bundle(), Instance: bound}, nil
}

// checkToken finds the token and checks its secret and that it is not
// revoked; expiry and uses are checked by tokenUsable, after a repeat.
func checkToken(r *store.Reader, tokID, secret string) (*store.Token, error) {
	rec, err := r.Get(store.TableTokens, tokID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrTokenInvalid
	}
	if err != nil {
		return nil, err
	}
	tok := rec.(*store.Token)
	hash := sha256.Sum256([]byte(secret))
	if subtle.ConstantTimeCompare(hash[:], tok.SecretHash) != 1 {
		return nil, ErrTokenInvalid
	}
	if tok.Revoked {
		return nil, fmt.Errorf("%w: token %s", ErrTokenRevoked, tok.ID)
	}
	return tok, nil
}

func tokenUsable(tok *store.Token, now time.Time) error {
	if !now.Before(tok.ExpiresAt) {
		return fmt.Errorf("%w: token %s expired at %s", ErrTokenExpired, tok.ID, tok.ExpiresAt.Format(time.RFC3339))
	}
	if tok.UsesLeft == 0 {
		return fmt.Errorf("%w: token %s (%d uses)", ErrTokenUsedUp, tok.ID, tok.Uses)
	}
	return nil
}

// previousIssuance is what the token issued for keyHash: its own record,
// or an entry of the token's legacy Issued map.
func previousIssuance(r *store.Reader, tok *store.Token, keyHash string) (*store.TokenIssuance, error) {
	rec, err := r.Get(store.TableIssuances, store.IssuanceKey(tok.ID, keyHash))
	if err == nil {
		return rec.(*store.TokenIssuance), nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if old, ok := tok.Issued[keyHash]; ok {
		return &store.TokenIssuance{ID: store.IssuanceKey(tok.ID, keyHash), TokenID: tok.ID, KeyHash: keyHash, Serial: old.Serial, Chain: old.Chain}, nil
	}
	return nil, nil
}

// migrateIssued moves a token's legacy Issued entries that are still valid
// into issuance records and empties the map (tok must be a copy).
func migrateIssued(tx *store.Txn, tok *store.Token) error {
	for keyHash, old := range tok.Issued {
		chain, err := certs.ParseCertsDER(old.Chain)
		if err != nil || len(chain) == 0 {
			continue
		}
		key := store.IssuanceKey(tok.ID, keyHash)
		if _, err := tx.Get(store.TableIssuances, key); err == nil {
			continue
		}
		if err := tx.Put(store.TableIssuances, &store.TokenIssuance{
			ID: key, TokenID: tok.ID, KeyHash: keyHash, Serial: old.Serial,
			InstanceID: certs.InstanceID(chain[0]), NotAfter: chain[0].NotAfter, Chain: old.Chain,
		}); err != nil {
			return err
		}
	}
	tok.Issued = nil
	return nil
}

// Renew issues a fresh SVID to the caller, whose verified client certificate
// is leaf, for the same identity and the same instance. The instance is read
// from leaf (certs.InstanceID): no request field and no store lookup decides
// it. claimed is the request's instance_id, which older proxies still send:
// empty, or equal to the bound instance, or the request is refused.
//
// A certificate issued before instance binding carries no instance; it is
// renewed for the instance meshd recorded when it issued that serial, and
// refused when meshd has no such record.
func (a *Authority) Renew(caller spiffeid.ID, leaf *x509.Certificate, csrDER []byte, claimed string) (*Issued, error) {
	return a.RenewWithToken(context.Background(), caller, leaf, csrDER, claimed, "")
}

// RenewWithToken is Renew with the request's service-account token. A
// certificate issued on a token review (it carries a pod UID,
// certs.PodUID) is renewed only with a fresh token that the Kubernetes API
// authenticates now, of the same service account and pod UID: a deleted
// pod's key stops renewing. The renewed SVID carries the same pod UID.
// The token is ignored for other certificates.
func (a *Authority) RenewWithToken(ctx context.Context, caller spiffeid.ID, leaf *x509.Certificate, csrDER []byte, claimed, saToken string) (*Issued, error) {
	if certs.IsReserved(caller) {
		return nil, fmt.Errorf("%w: %s is not renewed over the API", ErrReservedIdentity, caller)
	}
	if leaf == nil {
		return nil, fmt.Errorf("%w: renew needs the caller's certificate", ErrBadRequest)
	}
	if claimed != "" {
		if err := certs.CheckInstanceID(claimed); err != nil {
			return nil, fmt.Errorf("%w: instance_id: %w", ErrBadRequest, err)
		}
	}
	serial := serialHex(leaf)
	bound := certs.InstanceID(leaf)
	if bound == "" {
		var err error
		if bound, err = a.recordedInstance(caller, serial); err != nil {
			return nil, err
		}
	}
	if claimed != "" && claimed != bound {
		return nil, fmt.Errorf("%w: instance_id %q: this certificate is bound to instance %q", ErrBadRequest, claimed, bound)
	}
	csr, err := certs.CheckCSR(csrDER, caller)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSR, err)
	}
	if err := a.cfg.Store.View(func(r *store.Reader) error { return checkAllowed(r, caller, bound, serial) }); err != nil {
		return nil, err
	}
	now := a.cfg.Clock.Now()
	// The signing limit is taken before a token review, so that it also
	// bounds the reviews one certificate can cause.
	if err := a.limits.take(now, caller.String(), bound); err != nil {
		return nil, err
	}
	podUID := certs.PodUID(leaf)
	if podUID != "" {
		if err := a.checkRenewToken(ctx, caller, podUID, saToken); err != nil {
			return nil, err
		}
	}
	ca := a.cfg.CA.Current()
	chain, err := ca.SignChecked(csr, a.cfg.SVIDTTL, certs.WithInstance(bound), certs.WithPodUID(podUID))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSR, err)
	}
	// While etcd is unreachable (records already queued, or this write
	// failing so), the SVID is still issued: the revocation check above
	// ran on this replica's cache, and the record waits in a bounded queue
	// for RunRecorder. Renewals queue behind the ones waiting, so none
	// stalls on etcd's timeout.
	rec := certificateRecord(chain[0], caller, "renew", "", bound, ca.RootPin())
	rec.PodUID = podUID
	if a.queue.pending() {
		err = store.ErrUnavailable
	} else {
		err = a.cfg.Store.UpdateWithin(RecordWait, func(tx *store.Txn) error {
			// A revocation committed since the check above still wins.
			if err := checkAllowed(&tx.Reader, caller, bound, serial); err != nil {
				return err
			}
			if err := tx.Put(store.TableCertificates, rec); err != nil {
				return err
			}
			if rec, err := tx.Get(store.TableProxies, bound); err == nil && rec.(*store.Proxy).SPIFFEID == caller.String() {
				p := *rec.(*store.Proxy)
				p.SVIDExpiresAt = chain[0].NotAfter
				return tx.Put(store.TableProxies, &p)
			}
			return nil
		})
	}
	if errors.Is(err, store.ErrUnavailable) {
		err = a.queueRenewal(rec, err)
	}
	if err != nil {
		return nil, err
	}
	a.cfg.Logger.Info("renew: SVID issued", "spiffe_id", caller.String(), "serial", serialHex(chain[0]), "instance_id", bound, "previous_serial", serial)
	return &Issued{ID: caller, Chain: chain, Bundle: ca.Bundle(), Instance: bound, PodUID: podUID}, nil
}

// recordedInstance is the instance meshd recorded when it issued serial to
// id: how a certificate from before instance binding (which lives at most
// one SVID lifetime) is renewed. No record, or one without an instance, is
// refused: that certificate bootstraps again.
func (a *Authority) recordedInstance(id spiffeid.ID, serial string) (string, error) {
	var inst string
	err := a.cfg.Store.ViewFresh(func(r *store.Reader) error { // read through on a miss
		rec, err := r.Get(store.TableCertificates, serial)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: certificate %s carries no instance and meshd has no record of issuing it", ErrUnbound, serial)
		}
		if err != nil {
			return err
		}
		c := rec.(*store.Certificate)
		if c.SPIFFEID != id.String() || certs.CheckInstanceID(c.InstanceID) != nil {
			return fmt.Errorf("%w: certificate %s carries no instance and its record binds none", ErrUnbound, serial)
		}
		inst = c.InstanceID
		return nil
	})
	return inst, err
}

// ListCertificates returns the issued-certificate records, newest first.
func (a *Authority) ListCertificates(validOnly bool) ([]*store.Certificate, error) {
	now := a.cfg.Clock.Now()
	var out []*store.Certificate
	err := a.cfg.Store.View(func(r *store.Reader) error {
		recs, err := r.List(store.TableCertificates, "id")
		for _, rec := range recs {
			c := rec.(*store.Certificate)
			if validOnly && !now.Before(c.NotAfter) {
				continue
			}
			out = append(out, c)
		}
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].NotBefore.After(out[j].NotBefore) })
	return out, err
}

func putCertificate(tx *store.Txn, leaf *x509.Certificate, id spiffeid.ID, by, tokenID, instanceID, rootPin string) error {
	return tx.Put(store.TableCertificates, certificateRecord(leaf, id, by, tokenID, instanceID, rootPin))
}

func certificateRecord(leaf *x509.Certificate, id spiffeid.ID, by, tokenID, instanceID, rootPin string) *store.Certificate {
	return &store.Certificate{
		Serial:     serialHex(leaf),
		SPIFFEID:   id.String(),
		NotBefore:  leaf.NotBefore,
		NotAfter:   leaf.NotAfter,
		IssuedBy:   by,
		TokenID:    tokenID,
		InstanceID: instanceID,
		RootPin:    rootPin,
	}
}

// checkAllowed refuses a denied identity, a revoked instance, and (when
// serial is set) a certificate revoked by serial or recorded as issued to a
// revoked instance.
func checkAllowed(r *store.Reader, id spiffeid.ID, instanceID, serial string) error {
	if _, err := r.Get(store.TableDenials, id.String()); err == nil {
		return fmt.Errorf("%w: %s is denied", ErrRevoked, id)
	}
	if revokedInstance(r, instanceID) {
		return fmt.Errorf("%w: instance %s is revoked", ErrRevoked, instanceID)
	}
	if serial == "" {
		return nil
	}
	if _, err := r.Get(store.TableRevocations, serial); err == nil {
		return fmt.Errorf("%w: certificate %s is revoked", ErrRevoked, serial)
	}
	if rec, err := r.Get(store.TableCertificates, serial); err == nil {
		if inst := rec.(*store.Certificate).InstanceID; inst != instanceID && revokedInstance(r, inst) {
			return fmt.Errorf("%w: certificate %s was issued to instance %s, which is revoked", ErrRevoked, serial, inst)
		}
	}
	return nil
}

func revokedInstance(r *store.Reader, instanceID string) bool {
	if instanceID == "" {
		return false
	}
	rec, err := r.Get(store.TableProxies, instanceID)
	return err == nil && rec.(*store.Proxy).Revoked
}

// checkInstanceOwner refuses to bind an instance ID that a proxy of another
// identity registered: its revocation and rate limit are that proxy's.
func checkInstanceOwner(r *store.Reader, id spiffeid.ID, instanceID string) error {
	rec, err := r.Get(store.TableProxies, instanceID)
	if err == nil && rec.(*store.Proxy).SPIFFEID != "" && rec.(*store.Proxy).SPIFFEID != id.String() {
		return fmt.Errorf("%w: instance_id %q is registered to another identity", ErrBadRequest, instanceID)
	}
	return nil
}

func cloneToken(t *store.Token) *store.Token {
	c := *t
	c.Issued = make(map[string]store.Issuance, len(t.Issued))
	for k, v := range t.Issued {
		c.Issued[k] = v
	}
	return &c
}

func publicKeyHash(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:]), nil
}

func serialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// rawChain is the DER of each certificate.
func rawChain(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("identity: random: %w", err)
	}
	return hex.EncodeToString(b), nil
}
