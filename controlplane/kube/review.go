package kube

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/simplelru"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Audience is the audience a projected token must be minted for (the
// pod's volume says `audience: minimesh`); the review asks for it.
const Audience = "minimesh"

// The extra keys the API server fills for a token bound to a pod.
const (
	ExtraPodName = "authentication.kubernetes.io/pod-name"
	ExtraPodUID  = "authentication.kubernetes.io/pod-uid"
)

const saPrefix = "system:serviceaccount:"

// MaxTokenLen bounds a token meshd sends for review (projected tokens are
// about 1 KiB).
const MaxTokenLen = 16 << 10

// DefaultCacheTTL is the longest a successful review is reused; a review
// is never cached longer (the bound: a deleted pod's token stops
// working within a minute even when it is presented again).
const DefaultCacheTTL = time.Minute

// DefaultCacheSize bounds the reviews kept (LRU).
const DefaultCacheSize = 4096

var (
	// ErrUnauthenticated: the API server did not authenticate the token
	// for the audience minimesh (expired, unknown, of a deleted pod, or
	// for another audience).
	ErrUnauthenticated = errors.New("kube: service-account token not authenticated")
	// ErrNotPod: the token authenticates someone who is not a service
	// account's pod (a user, or a token not bound to a pod).
	ErrNotPod = errors.New("kube: token is not a pod's service-account token")
	// ErrUnavailable: the review could not be had (the API unreachable,
	// timing out, failing, or refusing meshd); callers fail closed.
	ErrUnavailable = errors.New("kube: Kubernetes API unavailable")
)

// PodIdentity is what a review's status says about a token: the service
// account and the pod it is bound to.
type PodIdentity struct {
	Namespace      string
	ServiceAccount string
	PodName        string
	PodUID         string
}

// TokenReviewer reviews a projected service-account token. Errors wrap
// ErrUnauthenticated, ErrNotPod or ErrUnavailable.
type TokenReviewer interface {
	Review(ctx context.Context, token string) (PodIdentity, error)
}

// ReviewerOptions tune a reviewer; zero fields take their defaults.
type ReviewerOptions struct {
	// Timeout bounds each review (default DefaultTimeout).
	Timeout time.Duration
	// CacheTTL: a successful review is reused this long, at most
	// DefaultCacheTTL (a larger value is cut to it); negative disables the
	// cache. Refusals are never cached.
	CacheTTL time.Duration
	// CacheSize bounds the cache (default DefaultCacheSize).
	CacheSize int
	// Now is the cache's clock (default time.Now).
	Now func() time.Time
}

// NewTokenReviewer reviews tokens through c's TokenReview API.
func NewTokenReviewer(c kubernetes.Interface, opts ReviewerOptions) TokenReviewer {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.CacheTTL == 0 || opts.CacheTTL > DefaultCacheTTL {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	cache, _ := lru.NewLRU(opts.CacheSize, nil)
	return &reviewer{c: c, opts: opts, cache: cache}
}

type reviewer struct {
	c    kubernetes.Interface
	opts ReviewerOptions

	mu    sync.Mutex
	cache *lru.LRU // sha256(token) -> cached
}

type cached struct {
	id      PodIdentity
	expires time.Time
}

func (r *reviewer) Review(ctx context.Context, token string) (PodIdentity, error) {
	if token == "" || len(token) > MaxTokenLen {
		return PodIdentity{}, fmt.Errorf("%w: token of %d bytes (want 1 to %d)", ErrUnauthenticated, len(token), MaxTokenLen)
	}
	// Only a digest of the token is kept: never the token.
	key := sha256.Sum256([]byte(token))
	if r.opts.CacheTTL > 0 {
		r.mu.Lock()
		v, ok := r.cache.Get(key)
		r.mu.Unlock()
		if ok && r.opts.Now().Before(v.(cached).expires) {
			return v.(cached).id, nil
		}
	}
	id, err := r.review(ctx, token)
	if err != nil {
		return PodIdentity{}, err
	}
	if r.opts.CacheTTL > 0 {
		r.mu.Lock()
		r.cache.Add(key, cached{id: id, expires: r.opts.Now().Add(r.opts.CacheTTL)})
		r.mu.Unlock()
	}
	return id, nil
}

func (r *reviewer) review(ctx context.Context, token string) (PodIdentity, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	tr, err := r.c.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return PodIdentity{}, unavailable(err)
	}
	return FromStatus(tr.Status)
}

// unavailable says why a review could not be had. The API's own words are
// kept short: they never contain the token (it is in the request body).
func unavailable(err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: the Kubernetes API refused meshd's TokenReview (does meshd's ServiceAccount have create on tokenreviews?): %s", ErrUnavailable, short(err.Error()))
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%w: the Kubernetes API did not accept meshd's own credentials: %s", ErrUnavailable, short(err.Error()))
	default:
		return fmt.Errorf("%w: TokenReview failed (is the Kubernetes API reachable?): %s", ErrUnavailable, short(err.Error()))
	}
}

// FromStatus is the pod identity a TokenReview's status names, or why it
// names none. Exported for other reviewers (and tests).
func FromStatus(st authnv1.TokenReviewStatus) (PodIdentity, error) {
	if !st.Authenticated {
		reason := short(st.Error)
		if reason == "" {
			reason = "no reason given"
		}
		return PodIdentity{}, fmt.Errorf("%w for audience %q (expired, unknown, of a deleted pod, or minted for another audience): %s", ErrUnauthenticated, Audience, reason)
	}
	// An authenticator that is not audience-aware answers with no
	// audiences: the token is then only known valid for the API server
	// itself, not for us.
	if !slices.Contains(st.Audiences, Audience) {
		return PodIdentity{}, fmt.Errorf("%w: the review does not confirm audience %q (status.audiences %q): the token is for another audience", ErrUnauthenticated, Audience, st.Audiences)
	}
	name := st.User.Username
	rest, ok := strings.CutPrefix(name, saPrefix)
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" || strings.Contains(sa, ":") {
		return PodIdentity{}, fmt.Errorf("%w: status.user.username %q is not system:serviceaccount:<namespace>:<name>", ErrNotPod, short(name))
	}
	pod, err := oneExtra(st.User.Extra, ExtraPodName)
	if err != nil {
		return PodIdentity{}, err
	}
	uid, err := oneExtra(st.User.Extra, ExtraPodUID)
	if err != nil {
		return PodIdentity{}, err
	}
	return PodIdentity{Namespace: ns, ServiceAccount: sa, PodName: pod, PodUID: uid}, nil
}

func oneExtra(extra map[string]authnv1.ExtraValue, key string) (string, error) {
	v := extra[key]
	if len(v) != 1 || v[0] == "" {
		return "", fmt.Errorf("%w: status.user.extra[%q] has %d values, want 1 (is the token bound to a pod? mount a projected serviceAccountToken)", ErrNotPod, key, len(v))
	}
	return v[0], nil
}

func short(s string) string {
	const max = 200
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
