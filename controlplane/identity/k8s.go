package identity

import (
	"context"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"minimesh/certs"
	"minimesh/controlplane/kube"
	"minimesh/controlplane/store"
)

// IssuedByK8sToken is the certificates table's issued_by of an SVID
// bootstrapped with a pod's service-account token.
const IssuedByK8sToken = "k8s-token"

// podUIDDigits is how many hex digits of the pod UID end its instance ID.
const podUIDDigits = 8

// PodInstanceID is the instance ID of a pod's proxy: the pod's name, "-",
// and the first 8 hex digits of its UID, so `meshctl proxies` matches
// `kubectl get pods`. The name is cut so the whole fits the instance-ID
// rule (certs.CheckInstanceID: at most 63 of [a-z0-9-], not starting with
// '-'); characters a pod name may have and an instance ID may not ('.')
// become '-'.
func PodInstanceID(podName, podUID string) (string, error) {
	var digits strings.Builder
	for i := 0; i < len(podUID) && digits.Len() < podUIDDigits; i++ {
		switch c := podUID[i]; {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			digits.WriteByte(c)
		case c >= 'A' && c <= 'F':
			digits.WriteByte(c - 'A' + 'a')
		case c == '-':
		default:
			return "", fmt.Errorf("%w: pod UID %q is not hexadecimal", ErrBadRequest, podUID)
		}
	}
	if digits.Len() < podUIDDigits {
		return "", fmt.Errorf("%w: pod UID %q has fewer than %d hex digits", ErrBadRequest, podUID, podUIDDigits)
	}
	name := []byte(strings.ToLower(podName))
	for i, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			name[i] = '-'
		}
	}
	max := certs.MaxInstanceIDLen - 1 - podUIDDigits
	if len(name) > max {
		name = name[:max]
	}
	base := strings.Trim(string(name), "-")
	id := digits.String()
	if base != "" {
		id = base + "-" + id
	}
	if err := certs.CheckInstanceID(id); err != nil {
		return "", fmt.Errorf("%w: pod %q: %w", ErrBadRequest, podName, err)
	}
	return id, nil
}

// review asks the Kubernetes API who token is; errors wrap the reviewer's
// or ErrNoKubeAPI.
func (a *Authority) review(ctx context.Context, token string) (kube.PodIdentity, spiffeid.ID, error) {
	if a.cfg.Reviewer == nil {
		return kube.PodIdentity{}, spiffeid.ID{}, fmt.Errorf("%w (--kube-api off, or neither in a pod nor given --kubeconfig): use a join token", ErrNoKubeAPI)
	}
	if token == "" || len(token) > kube.MaxTokenLen {
		return kube.PodIdentity{}, spiffeid.ID{}, fmt.Errorf("%w: k8s_service_account_token: want 1 to %d bytes, got %d", ErrBadRequest, kube.MaxTokenLen, len(token))
	}
	pod, err := a.cfg.Reviewer.Review(ctx, token)
	if err != nil {
		return kube.PodIdentity{}, spiffeid.ID{}, err
	}
	id, err := certs.WorkloadID(a.cfg.CA.Current().TrustDomain(), pod.Namespace, pod.ServiceAccount)
	if err != nil {
		return kube.PodIdentity{}, spiffeid.ID{}, fmt.Errorf("%w: service account %s/%s: %w", ErrBadRequest, pod.Namespace, pod.ServiceAccount, err)
	}
	if err := certs.CheckPodUID(pod.PodUID); err != nil {
		return kube.PodIdentity{}, spiffeid.ID{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	return pod, id, nil
}

// BootstrapSAToken exchanges a pod's projected service-account token
// (audience minimesh) and a CSR for an SVID. The identity is taken only
// from the Kubernetes API's review of the token (kube.TokenReviewer), never
// from the token's claims: spiffe://<td>/ns/<namespace>/sa/<account>, bound
// to the instance PodInstanceID names and to the pod's UID
// (certs.WithPodUID), so that its Renew needs a fresh token of that pod.
// claimed, the request's instance_id, may be empty or that instance.
// Reserved identities are refused, as for join tokens; there is no use
// count: a retry after a lost reply gets a new SVID, within the
// per-instance signing limit.
func (a *Authority) BootstrapSAToken(ctx context.Context, token string, csrDER []byte, claimed string) (*Issued, error) {
	if claimed != "" {
		if err := certs.CheckInstanceID(claimed); err != nil {
			return nil, fmt.Errorf("%w: instance_id: %w", ErrBadRequest, err)
		}
	}
	pod, id, err := a.review(ctx, token)
	if err != nil {
		return nil, err
	}
	if certs.IsReserved(id) {
		return nil, fmt.Errorf("%w: %s (service account %s/%s) cannot bootstrap with a service-account token", ErrReservedIdentity, id, pod.Namespace, pod.ServiceAccount)
	}
	instanceID, err := PodInstanceID(pod.PodName, pod.PodUID)
	if err != nil {
		return nil, err
	}
	if claimed != "" && claimed != instanceID {
		return nil, fmt.Errorf("%w: instance_id %q: a pod's instance is named by meshd: %q (leave it empty)", ErrBadRequest, claimed, instanceID)
	}
	var csr *certs.CheckedCSR
	err = a.cfg.Store.ViewFresh(func(r *store.Reader) error {
		if err := checkInstanceOwner(r, id, instanceID); err != nil {
			return err
		}
		if err := checkAllowed(r, id, instanceID, ""); err != nil {
			return err
		}
		var err error
		if csr, err = certs.CheckCSR(csrDER, id); err != nil {
			return fmt.Errorf("%w: %w (the token is of service account %s/%s: is --service-account or --namespace another?)", ErrCSR, err, pod.Namespace, pod.ServiceAccount)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	now := a.cfg.Clock.Now()
	if err := a.limits.take(now, id.String(), instanceID); err != nil {
		return nil, err
	}
	ca := a.cfg.CA.Current()
	chain, err := ca.SignChecked(csr, a.cfg.SVIDTTL, certs.WithInstance(instanceID), certs.WithPodUID(pod.PodUID))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSR, err)
	}
	rec := certificateRecord(chain[0], id, IssuedByK8sToken, "", instanceID, ca.RootPin())
	rec.PodUID = pod.PodUID
	err = a.cfg.Store.Update(func(tx *store.Txn) error {
		if err := checkInstanceOwner(&tx.Reader, id, instanceID); err != nil {
			return err
		}
		if err := checkAllowed(&tx.Reader, id, instanceID, ""); err != nil {
			return err
		}
		return tx.Put(store.TableCertificates, rec)
	})
	if err != nil {
		return nil, err
	}
	a.cfg.Logger.Info("bootstrap: SVID issued", "spiffe_id", id.String(), "serial", serialHex(chain[0]), "instance_id", instanceID,
		"attestation", IssuedByK8sToken, "pod", pod.Namespace+"/"+pod.PodName, "pod_uid", pod.PodUID)
	return &Issued{ID: id, Chain: chain, Bundle: ca.Bundle(), Instance: instanceID, PodUID: pod.PodUID}, nil
}

// checkRenewToken is Renew's check of a pod's SVID: a fresh token, which
// the Kubernetes API authenticates (so the pod still exists), of the same
// service account and the same pod UID.
func (a *Authority) checkRenewToken(ctx context.Context, caller spiffeid.ID, podUID, token string) error {
	if token == "" {
		return fmt.Errorf("%w: this certificate was issued to pod %s on a service-account token; send a fresh one (mesh-proxy --sa-token-file)", ErrSATokenRequired, podUID)
	}
	pod, id, err := a.review(ctx, token)
	if err != nil {
		return err
	}
	if id != caller {
		return fmt.Errorf("%w: the token is of %s, this certificate is %s", ErrPodMismatch, id, caller)
	}
	if pod.PodUID != podUID {
		return fmt.Errorf("%w: the token is of pod %s/%s (uid %s), this certificate was issued to pod uid %s", ErrPodMismatch, pod.Namespace, pod.PodName, pod.PodUID, podUID)
	}
	return nil
}
