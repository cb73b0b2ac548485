package controlplane

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"minimesh/certs"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/kube"
)

// The operator credential in a Kubernetes Secret (issue 25). The leader
// keeps the Secret OperatorSecretConfig names (default
// minimesh-system/meshctl-operator, which deploy/k8s/base creates empty)
// holding an operator credential as meshctl loads it from a mounted
// volume: svid.pem, svid_key.pem, bundle.pem, the files of
// <data-dir>/operator. It follows the operator credential's lifecycle
// (operator.go): each credential it issues is recorded first (issued_by
// operator:kube-secret) and so listed and revocable by serial. It is
// re-issued when the Secret holds none (or one that does not parse or is
// not the operator's), past half its life, once it no longer chains to the
// active root (a root rotation activated a new one) and when its serial is
// revoked; the bundle alone is rewritten when the CA's roots change (a
// rotation prepared or finished). The credential it replaces is left to
// expire, not revoked: a meshctl pod sees the Secret's new content only
// when the kubelet refreshes its volume (a minute or more later), and
// revoking earlier would break it meanwhile; whoever wants it gone sooner
// revokes its serial (meshctl operator list shows both).
//
// Kubernetes API use: get and update of that one Secret by name (RBAC:
// resourceNames [meshctl-operator]); meshd never creates or lists Secrets.
// Each call is bounded (kube.DefaultTimeout); a failure is retried after
// 1 s doubling to 1 min, counted in
// minimesh_meshd_operator_secret_syncs_total{result="error"} and logged
// without key material.

// IssuedToSecret is the IssuedBy of an operator credential meshd wrote into
// the Kubernetes Secret.
const IssuedToSecret = "operator:kube-secret"

// Defaults of OperatorSecretConfig.
const (
	DefaultOperatorSecretNamespace = "minimesh-system"
	DefaultOperatorSecretName      = "meshctl-operator"
)

// OperatorSecretConfig turns on the operator credential kept in a Secret:
// off unless Kube is set.
type OperatorSecretConfig struct {
	Kube kubernetes.Interface
	// Namespace and Name of the Secret (defaults above).
	Namespace, Name string
	// Check is how often the leader looks whether the credential it last
	// saw in the Secret is due (default 1s, no API call); Resync is how
	// often it reads the Secret back anyway (default 1m); Timeout bounds
	// each API call (default kube.DefaultTimeout).
	Check, Resync, Timeout time.Duration
}

func (c *OperatorSecretConfig) setDefaults() {
	if c.Namespace == "" {
		c.Namespace = DefaultOperatorSecretNamespace
	}
	if c.Name == "" {
		c.Name = DefaultOperatorSecretName
	}
	if c.Check <= 0 {
		c.Check = time.Second
	}
	if c.Resync <= 0 {
		c.Resync = time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = kube.DefaultTimeout
	}
}

// opSecret keeps the Secret; only Run's goroutine uses it.
type opSecret struct {
	cfg     OperatorSecretConfig
	log     *slog.Logger
	results *prometheus.CounterVec

	seen    []*x509.Certificate // the chain the Secret was last seen to hold (nil: look)
	bundle  []byte              // and its bundle.pem
	checked time.Time           // when
	retryAt time.Time           // after a failure
	backoff time.Duration
}

// Results of a sync, the result label of the counter.
const (
	opSecretCurrent = "current"
	opSecretIssued  = "issued"
	opSecretBundle  = "bundle"
	opSecretError   = "error"
)

// initOperatorSecret builds the keeper when the config turns it on.
func (s *Server) initOperatorSecret() error {
	c := s.cfg.OperatorSecret
	if c.Kube == nil {
		return nil
	}
	c.setDefaults()
	k := &opSecret{cfg: c, log: s.cfg.Logger.With("component", "operator-secret", "secret", c.Namespace+"/"+c.Name), results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minimesh_meshd_operator_secret_syncs_total",
		Help: "Looks at the Kubernetes Secret holding the operator credential, by result: current, issued (a new credential written), bundle (the roots rewritten), or error (the Kubernetes API unreachable, the Secret missing, RBAC).",
	}, []string{"result"})}
	for _, r := range []string{opSecretCurrent, opSecretIssued, opSecretBundle, opSecretError} {
		k.results.WithLabelValues(r)
	}
	if err := s.cfg.Registry.Register(k.results); err != nil {
		return err
	}
	s.opSecret = k
	return nil
}

// runOperatorSecret keeps the Secret on the leader until ctx ends; it
// returns at once when the keeper is off.
func (s *Server) runOperatorSecret(ctx context.Context) {
	k := s.opSecret
	if k == nil {
		return
	}
	tick := time.NewTicker(k.cfg.Check)
	defer tick.Stop()
	for {
		if s.store.IsLeader() {
			s.syncOperatorSecret(ctx, k)
		} else {
			k.seen = nil // a new leader reads the Secret first
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// syncOperatorSecret makes the Secret current when what it last saw there
// is due, or Resync has passed; after a failure it waits (1 s doubling to
// 1 min) before it asks the API again.
func (s *Server) syncOperatorSecret(ctx context.Context, k *opSecret) {
	now := s.cfg.Clock.Now()
	if now.Before(k.retryAt) {
		return
	}
	ca := s.ca.get()
	bundlePEM := certs.EncodeCertsPEM(ca.Bundle().X509Authorities())
	if k.seen != nil && now.Sub(k.checked) < k.cfg.Resync && s.operatorDue(ca, k.seen, now) == "" && bytes.Equal(k.bundle, bundlePEM) {
		return
	}
	// One reading of the CA for the whole sync: a rotation step between
	// the bundle and the credential would write one without the other.
	result, err := s.writeOperatorSecret(ctx, k, ca, bundlePEM, now)
	if err != nil {
		k.results.WithLabelValues(opSecretError).Inc()
		k.backoff = min(max(2*k.backoff, time.Second), time.Minute)
		k.retryAt = now.Add(k.backoff)
		k.seen = nil
		k.log.Error("could not keep the operator credential in the Secret current: meshctl in the cluster may be refused once the one there expires", "error", err, "retry_in", k.backoff)
		return
	}
	k.checked, k.backoff, k.retryAt = now, 0, time.Time{}
	k.results.WithLabelValues(result).Inc()
}

// operatorDue says why the operator credential with this chain is to be
// replaced ("" when it is not): past half its life (OperatorTTL), not verified by the
// bundle in force, not chaining to the active root, revoked, or not the
// operator's.
func (s *Server) operatorDue(ca *certs.CA, chain []*x509.Certificate, now time.Time) string {
	leaf := chain[0]
	// Half of the life it was issued with: NotBefore is backdated (clock
	// skew), so NotAfter less half of OperatorTTL, not the midpoint.
	half := leaf.NotAfter.Add(-s.cfg.OperatorTTL / 2)
	id, verified, err := certs.VerifyPeerCertificates(chain, ca.Bundle(), now)
	switch {
	case err != nil:
		return "does not verify"
	case id != certs.OperatorID(s.td):
		return "not the operator's"
	case !verified[len(verified)-1].Equal(ca.Root()):
		return "another root"
	case !now.Before(half):
		return "past half its life"
	case s.revokedSerial(authn.Serial(leaf)):
		return "revoked"
	}
	return ""
}

// writeOperatorSecret reads the Secret and, when it is due, writes a new
// credential (recorded first) or the current bundle into it, with the
// resourceVersion read: a concurrent change fails the update (Conflict)
// and it is retried.
func (s *Server) writeOperatorSecret(ctx context.Context, k *opSecret, ca *certs.CA, bundlePEM []byte, now time.Time) (string, error) {
	api := k.cfg.Kube.CoreV1().Secrets(k.cfg.Namespace)
	gctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	sec, err := api.Get(gctx, k.cfg.Name, metav1.GetOptions{})
	cancel()
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("get Secret %s/%s: it does not exist: meshd writes into the Secret deploy/k8s/base creates empty, it never creates one (or turn this off: --operator-secret=''): %w", k.cfg.Namespace, k.cfg.Name, err)
	}
	if err != nil {
		return "", fmt.Errorf("get Secret %s/%s from the Kubernetes API: %w", k.cfg.Namespace, k.cfg.Name, err)
	}
	reason := "empty"
	var chain []*x509.Certificate
	if d := sec.Data; len(d[certs.SVIDFile]) > 0 || len(d[certs.SVIDKeyFile]) > 0 {
		// Both parsed together: the key must be the certificate's.
		if svid, perr := x509svid.Parse(d[certs.SVIDFile], d[certs.SVIDKeyFile]); perr != nil {
			reason = "unreadable"
		} else {
			chain = svid.Certificates
			reason = s.operatorDue(ca, chain, now)
		}
	}
	result := opSecretCurrent
	data := map[string][]byte{}
	for k, v := range sec.Data {
		data[k] = v
	}
	var serial string
	var notAfter time.Time
	if reason != "" {
		svid, err := ca.IssueSVID(certs.OperatorID(s.td), s.cfg.OperatorTTL)
		if err != nil {
			return "", err
		}
		leaf := svid.Certificates[0]
		// Recorded before it exists anywhere, so it can always be listed
		// and revoked.
		if err := recordOperator(s.store, leaf, svid.ID, IssuedToSecret, ca.RootPin()); err != nil {
			return "", err
		}
		keyPEM, err := certs.EncodePrivateKeyPEM(svid.PrivateKey)
		if err != nil {
			return "", err
		}
		data[certs.SVIDFile] = certs.EncodeCertsPEM(svid.Certificates)
		data[certs.SVIDKeyFile] = keyPEM
		chain, serial, notAfter, result = svid.Certificates, authn.Serial(leaf), leaf.NotAfter, opSecretIssued
	}
	if !bytes.Equal(data[certs.BundleFile], bundlePEM) {
		data[certs.BundleFile] = bundlePEM
		if result == opSecretCurrent {
			result = opSecretBundle
		}
	}
	if result != opSecretCurrent {
		sec = sec.DeepCopy()
		sec.Data = data
		uctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
		_, err := api.Update(uctx, sec, metav1.UpdateOptions{FieldManager: "meshd"})
		cancel()
		if err != nil {
			// An issued credential that was never written stays recorded
			// until it expires; nobody holds its key.
			return "", fmt.Errorf("update Secret %s/%s through the Kubernetes API: %w", k.cfg.Namespace, k.cfg.Name, err)
		}
		if result == opSecretIssued {
			k.log.Info("wrote a new operator credential into the Secret", "reason", reason, "spiffe_id", certs.OperatorID(s.td).String(), "serial", serial, "issued_by", IssuedToSecret, "expires", notAfter)
		} else {
			k.log.Info("wrote the CA's roots into the Secret's bundle", "roots", len(ca.Bundle().X509Authorities()))
		}
	}
	k.seen, k.bundle = chain, bundlePEM
	return result, nil
}
