package store

import "time"

// Table names.
const (
	TableTokens       = "tokens"
	TableCertificates = "certificates"
	TableProxies      = "proxies"
	TableDenials      = "denials"
	// TableRevocations holds certificates revoked by serial (operator
	// credentials, which all share one identity): refused wherever they
	// are presented until they expire.
	TableRevocations = "revocations"
	// TableIssuances holds, per join token and bootstrapped public key,
	// the SVID issued for it (a Bootstrap repeated with the same key gets
	// it back), until that SVID expires.
	TableIssuances = "issuances"
	// TableIntermediates holds the intermediate CA certificates meshd
	// replicas sign with on etcd (one each, never its key): in use,
	// retired, and when a retired one is revoked.
	TableIntermediates = "intermediates"
)

// Intermediate is one replica's signing intermediate (etcd stores only).
// Its key stays in that replica's memory.
type Intermediate struct {
	// Serial is the intermediate's serial, lowercase hex.
	Serial   string    `json:"serial"`
	Replica  string    `json:"replica"`
	RootPin  string    `json:"root_pin"`
	IssuedAt time.Time `json:"issued_at"`
	NotAfter time.Time `json:"not_after"`
	// RetiredAt is when it stopped signing (re-issued, its replica
	// stopped or was found gone); zero while it signs.
	RetiredAt time.Time `json:"retired_at,omitzero"`
	// RevokeAt is when every workload SVID it signed has expired
	// (RetiredAt + the SVID lifetime): the leader then adds its serial to
	// the revocations table, until NotAfter.
	RevokeAt time.Time `json:"revoke_at,omitzero"`
	Revoked  bool      `json:"revoked,omitempty"`
}

// Key implements Record.
func (i *Intermediate) Key() string { return i.Serial }

// TokenIssuance is one SVID issued against a join token, keyed by the
// token's ID and the SHA-256 (hex) of the bootstrapped public key.
type TokenIssuance struct {
	// ID is IssuanceKey(TokenID, KeyHash).
	ID         string    `json:"id"`
	TokenID    string    `json:"token_id"`
	KeyHash    string    `json:"key_hash"`
	Serial     string    `json:"serial"`
	InstanceID string    `json:"instance_id,omitempty"`
	NotAfter   time.Time `json:"not_after"`
	Chain      [][]byte  `json:"chain"`
}

// Key implements Record.
func (i *TokenIssuance) Key() string { return i.ID }

// IssuanceKey is the key of a TokenIssuance.
func IssuanceKey(tokenID, keyHash string) string { return tokenID + "/" + keyHash }

// Revocation is one certificate revoked by its serial.
type Revocation struct {
	// Serial is the certificate's serial number, lowercase hex.
	Serial    string    `json:"serial"`
	SPIFFEID  string    `json:"spiffe_id"`
	NotAfter  time.Time `json:"not_after"`
	CreatedAt time.Time `json:"created_at"`
	// Reason is free text for the operator ("operator revoke").
	Reason string `json:"reason,omitempty"`
}

// Key implements Record.
func (r *Revocation) Key() string { return r.Serial }

// Denial is a SPIFFE ID that gets no certificates and no connections.
type Denial struct {
	SPIFFEID  string    `json:"spiffe_id"`
	CreatedAt time.Time `json:"created_at"`
}

// Key implements Record.
func (d *Denial) Key() string { return d.SPIFFEID }

// Record is a value kept in a table. Key is its primary key.
type Record interface {
	Key() string
}

// Token is a join token. Only a hash of its secret is kept.
type Token struct {
	ID             string    `json:"id"`
	SecretHash     []byte    `json:"secret_hash"`
	Namespace      string    `json:"namespace"`
	ServiceAccount string    `json:"service_account"`
	SPIFFEID       string    `json:"spiffe_id"`
	CreatedAt      time.Time `json:"created_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	Uses           uint32    `json:"uses"`
	UsesLeft       uint32    `json:"uses_left"`
	Revoked        bool      `json:"revoked"`
	// CAPin is the pin of the root in force when the token was made.
	CAPin string `json:"ca_pin,omitempty"`
	// Issued is read from data files written before TableIssuances
	// existed (it grew by a chain per use); new issuances are records of
	// their own, and these move there when the token is next written or
	// the certificate records are pruned. Never written anew.
	Issued map[string]Issuance `json:"issued,omitempty"`
}

// Issuance is one SVID issued against a token.
type Issuance struct {
	Serial string   `json:"serial"`
	Chain  [][]byte `json:"chain"`
}

// Key implements Record.
func (t *Token) Key() string { return t.ID }

// Certificate records an SVID meshd issued.
type Certificate struct {
	Serial     string    `json:"serial"`
	SPIFFEID   string    `json:"spiffe_id"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
	IssuedBy   string    `json:"issued_by"`
	TokenID    string    `json:"token_id,omitempty"`
	InstanceID string    `json:"instance_id,omitempty"`
	// RootPin is the pin of the root the certificate chains to.
	RootPin string `json:"root_pin,omitempty"`
	// PodUID is the Kubernetes pod the certificate was issued to, when it
	// was issued on a review of the pod's service-account token (the
	// certificate carries it too: certs.PodUID).
	PodUID string `json:"pod_uid,omitempty"`
}

// Key implements Record.
func (c *Certificate) Key() string { return c.Serial }

// Proxy is a registered proxy instance.
type Proxy struct {
	InstanceID string `json:"instance_id"`
	SPIFFEID   string `json:"spiffe_id"`
	Service    string `json:"service"`
	Address    string `json:"address"`
	Version    string `json:"version"`
	// Scoped proxies get the endpoints of the services in Scope
	// ("namespace/name", sorted) and of their Routes' backends only.
	Scoped        bool      `json:"scoped,omitempty"`
	Scope         []string  `json:"scope,omitempty"`
	Connected     bool      `json:"connected"`
	ConnectedAt   time.Time `json:"connected_at"`
	LastSeen      time.Time `json:"last_seen"`
	SVIDExpiresAt time.Time `json:"svid_expires_at"`
	// Sync state, persisted in batches by the push server.
	AckedVersion  string `json:"acked_version,omitempty"`
	NackedVersion string `json:"nacked_version,omitempty"`
	NackReason    string `json:"nack_reason,omitempty"`
	// AckedRoots are the pins of the roots in the trust bundle of the last
	// snapshot the proxy ACKed (for root rotation).
	AckedRoots []string `json:"acked_roots,omitempty"`
	// Revoked proxies get no more certificates and are no endpoints.
	Revoked bool `json:"revoked,omitempty"`
	// GraceUntil: a proxy whose stream ended without a Drain (meshd
	// restarted or died, or the proxy's network did) stays an endpoint
	// until then (meshd's endpoint grace). Zero while connected and after
	// a Drain.
	GraceUntil time.Time `json:"grace_until,omitzero"`
}

// Key implements Record.
func (p *Proxy) Key() string { return p.InstanceID }
