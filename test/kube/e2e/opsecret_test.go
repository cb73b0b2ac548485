package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/kube"
	meshv1 "minimesh/proto/mesh/v1"
	"minimesh/test/kube/kubetest"
)

// The operator credential in its Secret, against a real API server with
// RBAC on: the shipped Secret (empty), Role and RoleBinding are created;
// meshd reaches the API with its ServiceAccount's token through a
// kubeconfig (as --kubeconfig) and writes the Secret, which the Role alone
// allows; the credential works for an admin call as meshctl in a pod
// loads it; applying the manifest again leaves meshd's data alone; a
// forced root rotation re-issues it from the new root. meshd's account may
// do nothing else with Secrets.
func TestOperatorSecretAgainstARealAPIServer(t *testing.T) {
	s := kubetest.Start(t, "--authorization-mode=RBAC")
	admin, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "minimesh-system"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "meshd"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The shipped objects, as kustomize would put them in the namespace.
	raw, err := os.ReadFile("../../../deploy/k8s/injector/operator-secret.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var secretDoc []byte
	for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		switch tm.Kind {
		case "Secret":
			var o corev1.Secret
			if err := yaml.UnmarshalStrict(doc, &o); err != nil {
				t.Fatal(err)
			}
			secretDoc = doc
			if _, err := admin.CoreV1().Secrets(ns).Create(ctx, &o, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		case "Role":
			var o rbacv1.Role
			if err := yaml.UnmarshalStrict(doc, &o); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.RbacV1().Roles(ns).Create(ctx, &o, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		case "RoleBinding":
			var o rbacv1.RoleBinding
			if err := yaml.UnmarshalStrict(doc, &o); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &o, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("operator-secret.yaml: unexpected %s", tm.Kind)
		}
	}

	// meshd's ServiceAccount token in a kubeconfig.
	exp := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "meshd", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa := rest.AnonymousClientConfig(s.Config)
	sa.BearerToken = tr.Status.Token
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kubetest.WriteKubeconfig(kc, sa); err != nil {
		t.Fatal(err)
	}
	rc, _, err := kube.RESTConfig(kube.Settings{Kubeconfig: kc})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}

	// What meshd's account may do with Secrets: that one, get, update
	// and patch; nothing else. (The RBAC authorizer reads roles through
	// an informer: wait until the binding is seen.)
	allowed := func(verb, name string) bool {
		r, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:" + ns + ":meshd",
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: "secrets", Name: name},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status.Allowed
	}
	poll(t, "the RoleBinding in force", 30*time.Second, func() bool { return allowed("get", "meshctl-operator") })
	for _, c := range []struct {
		verb, name string
		want       bool
	}{
		{"get", "meshctl-operator", true}, {"update", "meshctl-operator", true}, {"patch", "meshctl-operator", true},
		{"delete", "meshctl-operator", false}, {"get", "other", false}, {"list", "", false}, {"watch", "", false}, {"create", "", false},
	} {
		if got := allowed(c.verb, c.name); got != c.want {
			t.Errorf("meshd may %s secret %q: %v, want %v", c.verb, c.name, got, c.want)
		}
	}

	m := controlplanetest.Start(t, controlplane.Config{
		OperatorSecret: controlplane.OperatorSecretConfig{Kube: cs, Check: 50 * time.Millisecond, Resync: time.Hour},
		RotationCheck:  time.Hour, // the rotation moves on when the test forces it
	})
	get := func() *x509svid.SVID {
		sec, err := admin.CoreV1().Secrets(ns).Get(ctx, "meshctl-operator", metav1.GetOptions{})
		if err != nil || len(sec.Data[certs.SVIDFile]) == 0 {
			return nil
		}
		svid, err := x509svid.Parse(sec.Data[certs.SVIDFile], sec.Data[certs.SVIDKeyFile])
		if err != nil {
			t.Fatalf("the Secret's credential: %v", err)
		}
		return svid
	}
	poll(t, "meshd writes the Secret", time.Minute, func() bool { return get() != nil })
	first := get()
	serial := authn.Serial(first.Certificates[0])

	// meshctl in a pod: the Secret's files as the kubelet mounts them.
	meshctl := func() meshv1.AdminServiceClient {
		t.Helper()
		sec, err := admin.CoreV1().Secrets(ns).Get(ctx, "meshctl-operator", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "operator")
		if err := os.Mkdir(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		for k, v := range sec.Data {
			if err := os.WriteFile(filepath.Join(dir, k), v, 0o440); err != nil {
				t.Fatal(err)
			}
		}
		svid, bundle, err := certs.LoadMountedSVID(dir, m.TrustDomain())
		if err != nil {
			t.Fatal(err)
		}
		src := certs.NewSVIDSource(nil)
		src.Set(svid)
		return meshv1.NewAdminServiceClient(m.Dial(t, certs.MTLSClientConfig(src, certs.NewBundleSource(bundle), certs.AuthorizeID(certs.MeshdID(m.TrustDomain())), certs.TLSOptions{})))
	}
	ops, err := meshctl().ListOperators(ctx, &meshv1.ListOperatorsRequest{})
	if err != nil {
		t.Fatalf("an admin call with the Secret's credential: %v", err)
	}
	found := false
	for _, o := range ops.Operators {
		found = found || (o.Serial == serial && o.IssuedBy == controlplane.IssuedToSecret)
	}
	if !found {
		t.Fatalf("the Secret's credential %s is not listed as %s: %v", serial, controlplane.IssuedToSecret, ops.Operators)
	}

	// kubectl apply of the manifest again (server-side apply, another
	// field manager): meshd's data stays.
	j, err := yaml.YAMLToJSON(secretDoc)
	if err != nil {
		t.Fatal(err)
	}
	force := true
	if _, err := admin.CoreV1().Secrets(ns).Patch(ctx, "meshctl-operator", types.ApplyPatchType, j, metav1.PatchOptions{FieldManager: "kubectl", Force: &force}); err != nil {
		t.Fatal(err)
	}
	if again := get(); again == nil || authn.Serial(again.Certificates[0]) != serial {
		t.Fatal("applying the manifest again cleared meshd's credential")
	}

	// A forced root rotation, with the Secret's credential: re-issued
	// from the new root, and it works.
	cli := meshctl()
	if _, err := cli.RotateCA(ctx, &meshv1.RotateCARequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.RotateCA(ctx, &meshv1.RotateCARequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	poll(t, "a credential from the new root in the Secret", time.Minute, func() bool {
		cur := get()
		c := cur.Certificates
		return authn.Serial(c[0]) != serial && c[len(c)-1].CheckSignatureFrom(m.CA().Root()) == nil
	})
	if _, err := meshctl().CAStatus(ctx, &meshv1.CAStatusRequest{}); err != nil {
		t.Fatalf("an admin call with the re-issued credential: %v", err)
	}
}
