// Package kubefake is the Kubernetes API as the outside world, for tests:
// an httptest HTTPS server answering TokenReview the way the API server
// does for projected service-account tokens. It mints tokens (ES256 JWTs
// signed with its own key) and verifies them on review: signature,
// expiry, audience; a pod "deleted" with DeletePod makes its tokens
// unauthenticated, as the API server's bound-token check does. It
// requires meshd's own bearer token, as a real API server does.
package kubefake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"minimesh/controlplane/kube"
)

// ReviewPath is where the TokenReview API is served.
const ReviewPath = "/apis/authentication.k8s.io/v1/tokenreviews"

// callerToken is the bearer token meshd presents (its ServiceAccount's).
const callerToken = "meshd-sa-token"

// API is a running fake API server.
type API struct {
	srv *httptest.Server
	key *ecdsa.PrivateKey

	mu sync.Mutex
	// deleted pod UIDs: their tokens are refused.
	deleted map[string]bool
	// noAudiences answers like an authenticator that is not audience-aware.
	noAudiences bool
	reviews     int
	now         func() time.Time
}

// Pod is what a token is bound to.
type Pod struct {
	Namespace, ServiceAccount, Name, UID string
}

// Start runs the API until the test ends.
func Start(t testing.TB) *API {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := &API{key: key, deleted: map[string]bool{}, now: time.Now}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	a.srv.EnableHTTP2 = true
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	return a
}

// Settings is a kube.Settings reaching this API through a kubeconfig file
// written in dir (as `meshd --kubeconfig` would).
func (a *API) Kubeconfig(t testing.TB, dir string) string {
	t.Helper()
	ca := base64.StdEncoding.EncodeToString(a.caPEM())
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: meshd
  user:
    token: %s
contexts:
- name: fake
  context: {cluster: fake, user: meshd}
current-context: fake
`, a.srv.URL, ca, callerToken)
	path := dir + "/kubeconfig"
	if err := writeFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

// RESTConfig reaches this API with meshd's credentials.
func (a *API) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            a.srv.URL,
		BearerToken:     callerToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: a.caPEM()},
		Timeout:         5 * time.Second,
	}
}

// URL is the server's address.
func (a *API) URL() string { return a.srv.URL }

// Close stops the API: later calls find nothing listening.
func (a *API) Close() { a.srv.Close() }

// DeletePod makes the tokens bound to the pod with uid unauthenticated.
func (a *API) DeletePod(uid string) {
	a.mu.Lock()
	a.deleted[uid] = true
	a.mu.Unlock()
}

// AudienceUnaware makes the API answer as an authenticator that ignores
// spec.audiences (no status.audiences).
func (a *API) AudienceUnaware() {
	a.mu.Lock()
	a.noAudiences = true
	a.mu.Unlock()
}

// Reviews is how many TokenReviews were answered.
func (a *API) Reviews() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reviews
}

// Token mints a token bound to pod for audiences, valid for ttl (negative:
// already expired).
func (a *API) Token(pod Pod, ttl time.Duration, audiences ...string) string {
	now := a.now()
	claims := map[string]any{
		"iss": "https://kubernetes.default.svc",
		"sub": "system:serviceaccount:" + pod.Namespace + ":" + pod.ServiceAccount,
		"aud": audiences,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(ttl).Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      pod.Namespace,
			"pod":            map[string]string{"name": pod.Name, "uid": pod.UID},
			"serviceaccount": map[string]string{"name": pod.ServiceAccount, "uid": "sa-uid"},
		},
	}
	return a.sign(claims)
}

// UserToken mints a token of a user that is no service account, for
// audience minimesh.
func (a *API) UserToken(name string) string {
	now := a.now()
	return a.sign(map[string]any{"sub": name, "aud": []string{kube.Audience}, "exp": now.Add(time.Hour).Unix()})
}

func (a *API) sign(claims map[string]any) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT"})
	p, _ := json.Marshal(claims)
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(p)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, a.key, sum[:])
	if err != nil {
		panic(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig)
}

type claims struct {
	Sub  string   `json:"sub"`
	Aud  []string `json:"aud"`
	Exp  int64    `json:"exp"`
	Kube *struct {
		Pod *struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

// verify checks the signature and expiry; the audience is checked by the
// caller against spec.audiences.
func (a *API) verify(tok string) (*claims, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT")
	}
	enc := base64.RawURLEncoding
	sig, err := enc.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, fmt.Errorf("bad signature encoding")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(&a.key.PublicKey, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return nil, fmt.Errorf("invalid signature")
	}
	body, err := enc.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var c claims
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, err
	}
	if a.now().Unix() >= c.Exp {
		return nil, fmt.Errorf("token has expired")
	}
	return &c, nil
}

func (a *API) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+callerToken {
		writeStatus(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != ReviewPath {
		writeStatus(w, http.StatusNotFound, "the server could not find the requested resource")
		return
	}
	// client-go sends built-in types as protobuf, others as JSON.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, err.Error())
		return
	}
	var tr authnv1.TokenReview
	if _, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, &tr); err != nil {
		writeStatus(w, http.StatusBadRequest, err.Error())
		return
	}
	a.mu.Lock()
	a.reviews++
	noAud := a.noAudiences
	a.mu.Unlock()
	tr.Status = a.review(tr.Spec, noAud)
	tr.Spec.Token = "" // the API server does not echo it either
	tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenReview"
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(&tr)
}

func (a *API) review(spec authnv1.TokenReviewSpec, noAud bool) authnv1.TokenReviewStatus {
	c, err := a.verify(spec.Token)
	if err != nil {
		return authnv1.TokenReviewStatus{Error: "[invalid bearer token, " + err.Error() + "]"}
	}
	want := spec.Audiences
	if len(want) == 0 || noAud {
		want = []string{"https://kubernetes.default.svc"}
	}
	var aud []string
	for _, x := range c.Aud {
		if slices.Contains(want, x) {
			aud = append(aud, x)
		}
	}
	if len(aud) == 0 && !noAud {
		return authnv1.TokenReviewStatus{Error: "[invalid bearer token, token audiences " + fmt.Sprint(c.Aud) + " is invalid for the target audiences " + fmt.Sprint(want) + "]"}
	}
	st := authnv1.TokenReviewStatus{Authenticated: true, Audiences: aud, User: authnv1.UserInfo{Username: c.Sub}}
	if noAud {
		st.Audiences = nil
	}
	if c.Kube != nil && c.Kube.Pod != nil {
		a.mu.Lock()
		gone := a.deleted[c.Kube.Pod.UID]
		a.mu.Unlock()
		if gone {
			return authnv1.TokenReviewStatus{Error: "[invalid bearer token, pod not found]"}
		}
		st.User.Extra = map[string]authnv1.ExtraValue{
			kube.ExtraPodName: {c.Kube.Pod.Name},
			kube.ExtraPodUID:  {c.Kube.Pod.UID},
		}
	}
	return st
}

func writeStatus(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(&metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Message: msg, Code: int32(code),
		Reason: metav1.StatusReason(http.StatusText(code)),
	})
}
