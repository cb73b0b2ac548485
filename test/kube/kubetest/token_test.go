package kubetest

import (
	"context"
	"slices"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The extra keys the API server fills for a pod-bound token.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// One API server for the package's tests: starting it is the slow part.
func TestAPIServer(t *testing.T) {
	s := Start(t)
	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("Kubeconfig", func(t *testing.T) { testKubeconfig(t, s) })
	t.Run("BoundTokenReviewed", func(t *testing.T) { testBoundTokenReviewed(t, cs) })
	t.Run("DeletedPodRefused", func(t *testing.T) { testDeletedPodRefused(t, cs) })
}

// The kubeconfig file reaches the same server with the same rights.
func testKubeconfig(t *testing.T, s *Server) {
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("via %s: %v", s.Kubeconfig, err)
	}
}

// makePod creates namespace ns (if new), service account sa and an
// unscheduled pod name running as sa.
func makePod(t *testing.T, cs kubernetes.Interface, ns, sa, name string) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !isAlreadyExists(err) {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !isAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "app:1"}},
		},
	}
	var out *corev1.Pod
	// The ServiceAccount admission plugin reads service accounts from an
	// informer, which may not have seen sa yet.
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Logf("create pod %s/%s: %v (retrying)", ns, name, err)
			return false, nil
		}
		out = p
		return true, nil
	})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return out
}

// boundToken asks TokenRequest for a token of sa bound to pod, with
// audience minimesh and the API's minimum lifetime.
func boundToken(t *testing.T, cs kubernetes.Interface, pod *corev1.Pod) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exp := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{
			Audiences:         []string{Audience},
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	if tr.Status.Token == "" {
		t.Fatal("TokenRequest returned no token")
	}
	return tr.Status.Token
}

func review(t *testing.T, cs kubernetes.Interface, token string, audiences ...string) authnv1.TokenReviewStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview: %v", err)
	}
	return r.Status
}

func testBoundTokenReviewed(t *testing.T, cs kubernetes.Interface) {
	pod := makePod(t, cs, "shop", "web", "web-7d4b9")
	tok := boundToken(t, cs, pod)

	st := review(t, cs, tok, Audience)
	if !st.Authenticated {
		t.Fatalf("review with audience %s: not authenticated: %q", Audience, st.Error)
	}
	if want := "system:serviceaccount:shop:web"; st.User.Username != want {
		t.Errorf("username %q, want %q", st.User.Username, want)
	}
	if got := st.User.Extra[extraPodName]; !slices.Equal(got, authnv1.ExtraValue{pod.Name}) {
		t.Errorf("extra %s = %v, want [%s]", extraPodName, got, pod.Name)
	}
	if got := st.User.Extra[extraPodUID]; !slices.Equal(got, authnv1.ExtraValue{string(pod.UID)}) {
		t.Errorf("extra %s = %v, want [%s]", extraPodUID, got, pod.UID)
	}
	if !slices.Equal(st.Audiences, []string{Audience}) {
		t.Errorf("audiences %v, want [%s]", st.Audiences, Audience)
	}

	// The same token under another audience is refused: meshd must ask
	// for minimesh, and a token for anything else must not pass.
	if st := review(t, cs, tok, "other"); st.Authenticated {
		t.Errorf("review with audience other: authenticated as %q", st.User.Username)
	}
	// A token minted for another audience is refused under minimesh.
	if st := review(t, cs, otherAudienceToken(t, cs, pod), Audience); st.Authenticated {
		t.Errorf("token for audience other, reviewed for %s: authenticated as %q", Audience, st.User.Username)
	}
	// A forged token (the signature's last bytes changed) is refused.
	forged := []byte(tok)
	forged[len(forged)-2] ^= 1
	if st := review(t, cs, string(forged), Audience); st.Authenticated {
		t.Errorf("forged token: authenticated as %q", st.User.Username)
	}
}

func otherAudienceToken(t *testing.T, cs kubernetes.Interface, pod *corev1.Pod) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{
			Audiences:      []string{"other"},
			BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func testDeletedPodRefused(t *testing.T, cs kubernetes.Interface) {
	pod := makePod(t, cs, "shop", "api", "api-5f6c8")
	tok := boundToken(t, cs, pod)
	if st := review(t, cs, tok, Audience); !st.Authenticated {
		t.Fatalf("before delete: not authenticated: %q", st.Error)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Unscheduled (no node), so the API deletes it at once.
	if err := cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The authenticator looks the pod up through an informer; wait
	// (bounded) until it has seen the delete.
	refused := func() bool { return !review(t, cs, tok, Audience).Authenticated }
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		return refused(), nil
	}); err != nil {
		t.Fatalf("the deleted pod's token is still accepted after 30s")
	}

	// A new pod of the same name has another UID: the old token stays
	// refused (a copied key stops renewing when its pod is gone, even if
	// the name comes back).
	again := makePod(t, cs, "shop", "api", "api-5f6c8")
	if again.UID == pod.UID {
		t.Fatalf("recreated pod kept UID %s", pod.UID)
	}
	if st := review(t, cs, tok, Audience); st.Authenticated {
		t.Errorf("old token after the pod was recreated as %s: authenticated with extra %v", types.UID(again.UID), st.User.Extra)
	}
	// ... while the new pod's own token is accepted.
	if st := review(t, cs, boundToken(t, cs, again), Audience); !st.Authenticated {
		t.Errorf("recreated pod's token: %q", st.Error)
	}
}
