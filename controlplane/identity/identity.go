package identity

import (
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
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
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

// CA signs certificates. *certs.CA implements it.
type CA interface {
	TrustDomain() spiffeid.TrustDomain
	SignCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration, opts ...certs.IssueOption) ([]*x509.Certificate, error)
	Bundle() *x509bundle.Bundle
	// RootPin is the pin of the root new certificates chain to.
	RootPin() string
}

var _ CA = (*certs.CA)(nil)

// Config configures an Authority.
type Config struct {
	Store *store.Store
	CA    CA
	// SVIDTTL is the lifetime of issued SVIDs; 0 means the CA's default.
	SVIDTTL time.Duration
	Clock   certs.Clock
	Logger  *slog.Logger
}

// Authority issues tokens and SVIDs.
type Authority struct {
	cfg Config
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
	return &Authority{cfg: cfg}, nil
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
	id, err := certs.WorkloadID(a.cfg.CA.TrustDomain(), req.Namespace, req.ServiceAccount)
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
	return a.cfg.Store.Update(func(tx *store.Txn) error {
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
		a.cfg.Logger.Info("join token revoked", "token_id", id)
		return tx.Put(store.TableTokens, tok)
	})
}

// Issued is a signed SVID chain and the bundle to verify peers with.
type Issued struct {
	ID     spiffeid.ID
	Chain  []*x509.Certificate
	Bundle *x509bundle.Bundle
}

// Bootstrap exchanges a join token and a CSR for an SVID.
func (a *Authority) Bootstrap(token string, csrDER []byte, instanceID string) (*Issued, error) {
	tokID, secret, ok := strings.Cut(token, ".")
	if !ok || len(tokID) != 2*tokenIDBytes || len(secret) != 2*tokenSecretBytes {
		return nil, ErrTokenMalformed
	}
	if err := checkInstanceID(instanceID); err != nil {
		return nil, err
	}
	var issued *Issued
	err := a.cfg.Store.Update(func(tx *store.Txn) error {
		rec, err := tx.Get(store.TableTokens, tokID)
		if errors.Is(err, store.ErrNotFound) {
			return ErrTokenInvalid
		}
		if err != nil {
			return err
		}
		tok := rec.(*store.Token)
		hash := sha256.Sum256([]byte(secret))
		if subtle.ConstantTimeCompare(hash[:], tok.SecretHash) != 1 {
			return ErrTokenInvalid
		}
		if tok.Revoked {
			return fmt.Errorf("%w: token %s", ErrTokenRevoked, tok.ID)
		}
		id, err := spiffeid.FromString(tok.SPIFFEID)
		if err != nil {
			return fmt.Errorf("identity: stored token %s: %w", tok.ID, err)
		}
		if err := checkAllowed(tx, id, instanceID); err != nil {
			return err
		}
		csr, err := certs.ValidateCSR(csrDER, id)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCSR, err)
		}
		keyHash, err := publicKeyHash(csr.PublicKey)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCSR, err)
		}
		now := a.cfg.Clock.Now()
		// A retry after a lost reply: the same key gets the same SVID back.
		if prev, ok := tok.Issued[keyHash]; ok {
			chain, err := certs.ParseCertsDER(prev.Chain)
			if err == nil && now.Before(chain[0].NotAfter) {
				issued = &Issued{ID: id, Chain: chain, Bundle: a.cfg.CA.Bundle()}
				a.cfg.Logger.Info("bootstrap repeated with the same key; returning the same SVID", "token_id", tok.ID, "serial", prev.Serial)
				return nil
			}
		}
		if !now.Before(tok.ExpiresAt) {
			return fmt.Errorf("%w: token %s expired at %s", ErrTokenExpired, tok.ID, tok.ExpiresAt.Format(time.RFC3339))
		}
		if tok.UsesLeft == 0 {
			return fmt.Errorf("%w: token %s (%d uses)", ErrTokenUsedUp, tok.ID, tok.Uses)
		}
		chain, err := a.cfg.CA.SignCSR(csrDER, id, a.cfg.SVIDTTL)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCSR, err)
		}
		tok = cloneToken(tok)
		tok.UsesLeft--
		if tok.Issued == nil {
			tok.Issued = map[string]store.Issuance{}
		}
		tok.Issued[keyHash] = store.Issuance{Serial: serialHex(chain[0]), Chain: rawChain(chain)}
		if err := tx.Put(store.TableTokens, tok); err != nil {
			return err
		}
		if err := putCertificate(tx, chain[0], id, "bootstrap", tok.ID, instanceID, a.cfg.CA.RootPin()); err != nil {
			return err
		}
		issued = &Issued{ID: id, Chain: chain, Bundle: a.cfg.CA.Bundle()}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.cfg.Logger.Info("bootstrap: SVID issued", "spiffe_id", issued.ID.String(), "serial", serialHex(issued.Chain[0]), "instance_id", instanceID, "token_id", tokID)
	return issued, nil
}

// Renew issues a fresh SVID for caller, who proved it holds a valid SVID.
func (a *Authority) Renew(caller spiffeid.ID, csrDER []byte, instanceID string) (*Issued, error) {
	if certs.IsReserved(caller) {
		return nil, fmt.Errorf("%w: %s is not renewed over the API", ErrReservedIdentity, caller)
	}
	if err := checkInstanceID(instanceID); err != nil {
		return nil, err
	}
	if _, err := certs.ValidateCSR(csrDER, caller); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSR, err)
	}
	var issued *Issued
	err := a.cfg.Store.Update(func(tx *store.Txn) error {
		if err := checkAllowed(tx, caller, instanceID); err != nil {
			return err
		}
		chain, err := a.cfg.CA.SignCSR(csrDER, caller, a.cfg.SVIDTTL)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCSR, err)
		}
		if err := putCertificate(tx, chain[0], caller, "renew", "", instanceID, a.cfg.CA.RootPin()); err != nil {
			return err
		}
		if instanceID != "" {
			if rec, err := tx.Get(store.TableProxies, instanceID); err == nil && rec.(*store.Proxy).SPIFFEID == caller.String() {
				p := *rec.(*store.Proxy)
				p.SVIDExpiresAt = chain[0].NotAfter
				if err := tx.Put(store.TableProxies, &p); err != nil {
					return err
				}
			}
		}
		issued = &Issued{ID: caller, Chain: chain, Bundle: a.cfg.CA.Bundle()}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.cfg.Logger.Info("renew: SVID issued", "spiffe_id", caller.String(), "serial", serialHex(issued.Chain[0]), "instance_id", instanceID)
	return issued, nil
}

// RecordInternal records a certificate meshd issued to itself or the operator.
func (a *Authority) RecordInternal(leaf *x509.Certificate, id spiffeid.ID) error {
	return a.cfg.Store.Update(func(tx *store.Txn) error {
		return putCertificate(tx, leaf, id, "internal", "", "", a.cfg.CA.RootPin())
	})
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
	return tx.Put(store.TableCertificates, &store.Certificate{
		Serial:     serialHex(leaf),
		SPIFFEID:   id.String(),
		NotBefore:  leaf.NotBefore,
		NotAfter:   leaf.NotAfter,
		IssuedBy:   by,
		TokenID:    tokenID,
		InstanceID: instanceID,
		RootPin:    rootPin,
	})
}

// checkAllowed refuses a denied identity or a revoked instance.
func checkAllowed(tx *store.Txn, id spiffeid.ID, instanceID string) error {
	if _, err := tx.Get(store.TableDenials, id.String()); err == nil {
		return fmt.Errorf("%w: %s is denied", ErrRevoked, id)
	}
	if instanceID != "" {
		if rec, err := tx.Get(store.TableProxies, instanceID); err == nil && rec.(*store.Proxy).Revoked {
			return fmt.Errorf("%w: instance %s is revoked", ErrRevoked, instanceID)
		}
	}
	return nil
}

func checkInstanceID(id string) error {
	if len(id) > 64 {
		return fmt.Errorf("%w: instance_id: longer than 64 characters", ErrBadRequest)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("%w: instance_id: only lowercase letters, digits and '-' are allowed", ErrBadRequest)
		}
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
