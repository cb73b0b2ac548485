package identity_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/client-go/kubernetes"

	"minimesh/certs"
	"minimesh/controlplane/identity"
	"minimesh/controlplane/kube"
	"minimesh/controlplane/kube/kubefake"
	"minimesh/controlplane/store"
)

var webPod = kubefake.Pod{Namespace: "default", ServiceAccount: "web", Name: "web-7d9f8b-x2x9z", UID: "0f3c5a9e-1111-2222-3333-444455556666"}

const webPodInstance = "web-7d9f8b-x2x9z-0f3c5a9e"

// newK8sEnv is newEnv whose Authority reviews tokens with a fake
// Kubernetes API (over HTTPS, through client-go), without a review cache.
func newK8sEnv(t *testing.T) (*env, *kubefake.API) {
	t.Helper()
	e := newEnv(t, identity.SignLimits{})
	api := kubefake.Start(t)
	c, err := kubernetes.NewForConfig(api.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "meshd.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	e.auth, err = identity.New(identity.Config{Store: st, CA: e.ca, Clock: e.clock,
		Reviewer: kube.NewTokenReviewer(c, kube.ReviewerOptions{CacheTTL: -1, Timeout: 2 * time.Second})})
	if err != nil {
		t.Fatal(err)
	}
	return e, api
}

func TestPodInstanceID(t *testing.T) {
	for _, c := range []struct{ pod, uid, want string }{
		{"web-7d9f8b-x2x9z", "0f3c5a9e-1111-2222-3333-444455556666", "web-7d9f8b-x2x9z-0f3c5a9e"},
		{"web", "0F3C-5A9E-ffff", "web-0f3c5a9e"},
		{"api.v2-0", "abcdef0123", "api-v2-0-abcdef01"},
		{strings.Repeat("a", 253), "12345678", strings.Repeat("a", 54) + "-12345678"},
		{strings.Repeat("a", 53) + ".b", "12345678", strings.Repeat("a", 53) + "-12345678"},
	} {
		got, err := identity.PodInstanceID(c.pod, c.uid)
		if err != nil || got != c.want || certs.CheckInstanceID(got) != nil {
			t.Errorf("PodInstanceID(%q, %q) = %q, %v; want %q", c.pod, c.uid, got, err, c.want)
		}
	}
	for _, uid := range []string{"", "1234567", "zz345678", "1234-567"} {
		if _, err := identity.PodInstanceID("web", uid); !errors.Is(err, identity.ErrBadRequest) {
			t.Errorf("PodInstanceID with uid %q: %v", uid, err)
		}
	}
}

func TestBootstrapWithServiceAccountToken(t *testing.T) {
	e, api := newK8sEnv(t)
	_, csr := e.csr(webID())
	is, err := e.auth.BootstrapSAToken(context.Background(), api.Token(webPod, 10*time.Minute, "minimesh"), csr, "")
	if err != nil {
		t.Fatal(err)
	}
	leaf := is.Chain[0]
	if is.ID != webID() || certs.InstanceID(leaf) != webPodInstance || certs.PodUID(leaf) != webPod.UID {
		t.Fatalf("issued %s instance %q pod %q", is.ID, certs.InstanceID(leaf), certs.PodUID(leaf))
	}
	var rec *store.Certificate
	_ = e.st.View(func(r *store.Reader) error {
		v, err := r.Get(store.TableCertificates, leaf.SerialNumber.Text(16))
		if err == nil {
			rec = v.(*store.Certificate)
		}
		return err
	})
	if rec == nil || rec.IssuedBy != identity.IssuedByK8sToken || rec.PodUID != webPod.UID || rec.InstanceID != webPodInstance {
		t.Fatalf("certificate record %+v", rec)
	}
	// The request may name the instance meshd names, not another.
	_, csr = e.csr(webID())
	if _, err := e.auth.BootstrapSAToken(context.Background(), api.Token(webPod, 10*time.Minute, "minimesh"), csr, webPodInstance); err != nil {
		t.Fatalf("claiming the pod's own instance: %v", err)
	}
	_, csr = e.csr(webID())
	if _, err := e.auth.BootstrapSAToken(context.Background(), api.Token(webPod, 10*time.Minute, "minimesh"), csr, "web-other"); !errors.Is(err, identity.ErrBadRequest) {
		t.Fatalf("claiming another instance: %v", err)
	}
	// A CSR for another identity than the review's.
	_, csr = e.csr(spiffeid.RequireFromString("spiffe://" + td + "/ns/default/sa/api"))
	if _, err := e.auth.BootstrapSAToken(context.Background(), api.Token(webPod, 10*time.Minute, "minimesh"), csr, ""); !errors.Is(err, identity.ErrCSR) || !strings.Contains(err.Error(), "default/web") {
		t.Fatalf("CSR for api with web's token: %v", err)
	}
}

func TestBootstrapWithServiceAccountTokenRefusals(t *testing.T) {
	e, api := newK8sEnv(t)
	gone := kubefake.Pod{Namespace: "default", ServiceAccount: "web", Name: "web-gone", UID: "99999999-0000-0000-0000-000000000000"}
	goneTok := api.Token(gone, 10*time.Minute, "minimesh")
	api.DeletePod(gone.UID)
	meshdPod := kubefake.Pod{Namespace: "minimesh-system", ServiceAccount: "meshd", Name: "meshd-0", UID: "11111111-0000-0000-0000-000000000000"}
	opPod := kubefake.Pod{Namespace: "minimesh-system", ServiceAccount: "operator", Name: "op-0", UID: "22222222-0000-0000-0000-000000000000"}
	for _, c := range []struct {
		name  string
		id    spiffeid.ID
		token string
		want  error
	}{
		{"another audience", webID(), api.Token(webPod, 10*time.Minute, "vault"), kube.ErrUnauthenticated},
		{"expired", webID(), api.Token(webPod, -time.Minute, "minimesh"), kube.ErrUnauthenticated},
		{"unknown", webID(), kubefake.Start(t).Token(webPod, 10*time.Minute, "minimesh"), kube.ErrUnauthenticated},
		{"deleted pod", webID(), goneTok, kube.ErrUnauthenticated},
		{"not a service account", webID(), api.UserToken("alice"), kube.ErrNotPod},
		{"meshd's service account", certs.MeshdID(spiffeid.RequireTrustDomainFromString(td)), api.Token(meshdPod, 10*time.Minute, "minimesh"), identity.ErrReservedIdentity},
		{"the operator's service account", certs.OperatorID(spiffeid.RequireTrustDomainFromString(td)), api.Token(opPod, 10*time.Minute, "minimesh"), identity.ErrReservedIdentity},
		{"empty", webID(), "", identity.ErrBadRequest},
	} {
		_, csr := e.csr(c.id)
		if _, err := e.auth.BootstrapSAToken(context.Background(), c.token, csr, ""); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	n := 0
	_ = e.st.View(func(r *store.Reader) error {
		recs, _ := r.List(store.TableCertificates, "id")
		n = len(recs)
		return nil
	})
	if n != 0 {
		t.Fatalf("%d certificates recorded by refused bootstraps", n)
	}
	// A revoked pod instance is refused as any revoked instance.
	e.revokeInstance(webPodInstance)
	_, csr := e.csr(webID())
	if _, err := e.auth.BootstrapSAToken(context.Background(), api.Token(webPod, 10*time.Minute, "minimesh"), csr, ""); !errors.Is(err, identity.ErrRevoked) {
		t.Fatalf("revoked pod instance: %v", err)
	}
	// The API unreachable: fail closed.
	api.Close()
	_, csr = e.csr(webID())
	if _, err := e.auth.BootstrapSAToken(context.Background(), "x.y.z", csr, ""); !errors.Is(err, kube.ErrUnavailable) {
		t.Fatalf("API down: %v", err)
	}
}

func TestBootstrapWithServiceAccountTokenNeedsAPIAccess(t *testing.T) {
	e := newEnv(t, identity.SignLimits{})
	_, csr := e.csr(webID())
	if _, err := e.auth.BootstrapSAToken(context.Background(), "a.b.c", csr, ""); !errors.Is(err, identity.ErrNoKubeAPI) {
		t.Fatalf("no reviewer: %v", err)
	}
}

func TestRenewOfAPodsSVIDNeedsAFreshTokenOfThatPod(t *testing.T) {
	e, api := newK8sEnv(t)
	_, csr := e.csr(webID())
	is, err := e.auth.BootstrapSAToken(context.Background(), api.Token(webPod, 10*time.Minute, "minimesh"), csr, "")
	if err != nil {
		t.Fatal(err)
	}
	renew := func(token string) (*identity.Issued, error) {
		e.clock.Add(11 * time.Second) // past the per-instance signing limit
		_, csr := e.csr(webID())
		return e.auth.RenewWithToken(context.Background(), webID(), is.Chain[0], csr, "", token)
	}
	r, err := renew(api.Token(webPod, 10*time.Minute, "minimesh"))
	if err != nil {
		t.Fatal(err)
	}
	if certs.PodUID(r.Chain[0]) != webPod.UID || certs.InstanceID(r.Chain[0]) != webPodInstance {
		t.Fatalf("renewed SVID lost its binding: pod %q instance %q", certs.PodUID(r.Chain[0]), certs.InstanceID(r.Chain[0]))
	}
	// A renewed SVID is renewed the same way: it carries the pod too.
	is = r
	other := webPod
	other.Name, other.UID = "web-7d9f8b-other", "abcdef01-0000-0000-0000-000000000000"
	apiPod := kubefake.Pod{Namespace: "default", ServiceAccount: "api", Name: webPod.Name, UID: webPod.UID}
	for _, c := range []struct {
		name, token string
		want        error
	}{
		{"no token", "", identity.ErrSATokenRequired},
		{"another pod's token", api.Token(other, 10*time.Minute, "minimesh"), identity.ErrPodMismatch},
		{"another service account's token", api.Token(apiPod, 10*time.Minute, "minimesh"), identity.ErrPodMismatch},
		{"another audience", api.Token(webPod, 10*time.Minute, "vault"), kube.ErrUnauthenticated},
	} {
		if _, err := renew(c.token); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Renew without a token (the old entry point) is refused too.
	_, csr = e.csr(webID())
	if _, err := e.auth.Renew(webID(), is.Chain[0], csr, ""); !errors.Is(err, identity.ErrSATokenRequired) {
		t.Fatalf("Renew: %v", err)
	}
	// The pod is deleted: a copy of its key and a token minted before
	// cannot renew.
	fresh := api.Token(webPod, 10*time.Minute, "minimesh")
	api.DeletePod(webPod.UID)
	if _, err := renew(fresh); !errors.Is(err, kube.ErrUnauthenticated) {
		t.Fatalf("after the pod was deleted: %v", err)
	}
	api.Close()
	if _, err := renew(fresh); !errors.Is(err, kube.ErrUnavailable) {
		t.Fatalf("API down: %v", err)
	}
}

// A join-token SVID's Renew never calls the API, whatever it sends.
func TestRenewOfAJoinTokenSVIDIgnoresTheToken(t *testing.T) {
	e, api := newK8sEnv(t)
	a := e.bootstrap("web-a")
	api.Close()
	_, csr := e.csr(webID())
	if _, err := e.auth.RenewWithToken(context.Background(), webID(), a.Chain[0], csr, "", "whatever"); err != nil {
		t.Fatal(err)
	}
}
