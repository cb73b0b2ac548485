package kube_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"minimesh/controlplane/kube"
	"minimesh/controlplane/kube/kubefake"
)

var pod = kubefake.Pod{Namespace: "shop", ServiceAccount: "web", Name: "web-7d9f-abcde", UID: "0f3c5a9e-1111-2222-3333-444455556666"}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func reviewer(t *testing.T, api *kubefake.API, opts kube.ReviewerOptions) kube.TokenReviewer {
	t.Helper()
	path := api.Kubeconfig(t, t.TempDir())
	c, source, err := kube.NewClient(kube.Settings{Kubeconfig: path})
	if err != nil || c == nil {
		t.Fatalf("NewClient: %v", err)
	}
	if source != "kubeconfig "+path {
		t.Errorf("source %q", source)
	}
	return kube.NewTokenReviewer(c, opts)
}

func TestReviewNamesThePodFromTheStatus(t *testing.T) {
	api := kubefake.Start(t)
	r := reviewer(t, api, kube.ReviewerOptions{CacheTTL: -1})
	got, err := r.Review(context.Background(), api.Token(pod, 10*time.Minute, "minimesh"))
	if err != nil {
		t.Fatal(err)
	}
	want := kube.PodIdentity{Namespace: "shop", ServiceAccount: "web", PodName: pod.Name, PodUID: pod.UID}
	if got != want {
		t.Fatalf("review: %+v, want %+v", got, want)
	}
}

func TestReviewRefusals(t *testing.T) {
	api := kubefake.Start(t)
	other := kubefake.Start(t) // another issuer's key: a token the API does not know
	r := reviewer(t, api, kube.ReviewerOptions{CacheTTL: -1})
	deleted := kubefake.Pod{Namespace: "shop", ServiceAccount: "web", Name: "web-gone", UID: "9a9a9a9a-0000-0000-0000-000000000000"}
	deletedTok := api.Token(deleted, 10*time.Minute, "minimesh")
	api.DeletePod(deleted.UID)
	for _, c := range []struct {
		name, token string
		want        error
		says        string
	}{
		{"another audience", api.Token(pod, 10*time.Minute, "https://kubernetes.default.svc", "vault"), kube.ErrUnauthenticated, "audience"},
		{"expired", api.Token(pod, -time.Second, "minimesh"), kube.ErrUnauthenticated, "expired"},
		{"unknown", other.Token(pod, 10*time.Minute, "minimesh"), kube.ErrUnauthenticated, "invalid signature"},
		{"garbage", "not-a-jwt", kube.ErrUnauthenticated, "not a JWT"},
		{"deleted pod", deletedTok, kube.ErrUnauthenticated, "pod not found"},
		{"a user, not a service account", api.UserToken("alice"), kube.ErrNotPod, "system:serviceaccount"},
		{"a token bound to no pod", api.Token(kubefake.Pod{Namespace: "shop", ServiceAccount: "web"}, 10*time.Minute, "minimesh"), kube.ErrNotPod, "bound to a pod"},
		{"empty", "", kube.ErrUnauthenticated, "0 bytes"},
		{"huge", strings.Repeat("a", kube.MaxTokenLen+1), kube.ErrUnauthenticated, "bytes"},
	} {
		_, err := r.Review(context.Background(), c.token)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want %v saying %q", c.name, err, c.want, c.says)
		}
	}
}

// An authenticator that ignores spec.audiences says authenticated with no
// audiences: the token is valid for the API server, not for minimesh.
func TestReviewNeedsTheAudienceConfirmed(t *testing.T) {
	api := kubefake.Start(t)
	r := reviewer(t, api, kube.ReviewerOptions{CacheTTL: -1})
	api.AudienceUnaware()
	_, err := r.Review(context.Background(), api.Token(pod, 10*time.Minute, "https://kubernetes.default.svc"))
	if !errors.Is(err, kube.ErrUnauthenticated) || !strings.Contains(err.Error(), "does not confirm audience") {
		t.Fatalf("audience-unaware review: %v", err)
	}
}

func TestReviewFailsClosedWhenTheAPIIsUnreachableOrRefusesMeshd(t *testing.T) {
	api := kubefake.Start(t)
	tok := api.Token(pod, 10*time.Minute, "minimesh")
	// meshd's own credentials refused (no bearer token).
	cfg := api.RESTConfig()
	cfg.BearerToken = ""
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = kube.NewTokenReviewer(c, kube.ReviewerOptions{}).Review(context.Background(), tok)
	if !errors.Is(err, kube.ErrUnavailable) || !strings.Contains(err.Error(), "meshd's own credentials") {
		t.Fatalf("unauthorized meshd: %v", err)
	}
	r := reviewer(t, api, kube.ReviewerOptions{CacheTTL: -1, Timeout: 2 * time.Second})
	api.Close()
	_, err = r.Review(context.Background(), tok)
	if !errors.Is(err, kube.ErrUnavailable) || !strings.Contains(err.Error(), "Kubernetes API") {
		t.Fatalf("API down: %v", err)
	}
	if strings.Contains(err.Error(), tok) {
		t.Fatal("the error carries the token")
	}
}

func TestReviewCacheIsBoundedInTime(t *testing.T) {
	api := kubefake.Start(t)
	clk := &clock{t: time.Now()}
	// A longer TTL asked for is cut to a minute.
	r := reviewer(t, api, kube.ReviewerOptions{CacheTTL: time.Hour, Now: clk.now})
	tok := api.Token(pod, 10*time.Minute, "minimesh")
	for i := 0; i < 3; i++ {
		if _, err := r.Review(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := api.Reviews(); n != 1 {
		t.Fatalf("%d reviews for 3 uses within a minute, want 1", n)
	}
	api.DeletePod(pod.UID)
	clk.add(kube.DefaultCacheTTL + time.Second)
	if _, err := r.Review(context.Background(), tok); !errors.Is(err, kube.ErrUnauthenticated) {
		t.Fatalf("a minute after the pod was deleted: %v, want refused", err)
	}
	// Refusals are not cached: each is asked again.
	_, _ = r.Review(context.Background(), tok)
	if n := api.Reviews(); n != 3 {
		t.Fatalf("%d reviews, want 3", n)
	}
}

func TestSettings(t *testing.T) {
	for _, s := range []kube.Settings{
		{Mode: "on"},
		{Mode: kube.ModeOff, Kubeconfig: "/k"},
		{Timeout: -time.Second},
	} {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
	if _, _, err := kube.RESTConfig(kube.Settings{Kubeconfig: t.TempDir() + "/missing"}); err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("missing kubeconfig: %v", err)
	}
	c, source, err := kube.NewClient(kube.Settings{Mode: kube.ModeOff})
	if c != nil || source != "" || err != nil {
		t.Errorf("off: %v %q %v", c, source, err)
	}
	// Outside a pod (no KUBERNETES_SERVICE_HOST): no access, no error.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if cfg, _, err := kube.RESTConfig(kube.Settings{}); cfg != nil || err != nil {
		t.Errorf("outside a pod: %v %v", cfg, err)
	}
	// In a pod whose ServiceAccount files are missing: an error, not a
	// silent "join tokens only".
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
	t.Setenv("KUBERNETES_SERVICE_PORT", "443")
	if _, _, err := kube.RESTConfig(kube.Settings{}); err == nil || !strings.Contains(err.Error(), "in-cluster") {
		t.Errorf("broken in-cluster config: %v", err)
	}
}
