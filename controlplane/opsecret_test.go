package controlplane_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/controlplane"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// secretAPI is the Kubernetes API as the outside world: one Secret,
// minimesh-system/meshctl-operator, that may be read (GET) and replaced
// (PUT, with the resourceVersion read: another is a 409 Conflict).
// Anything else (create, list, another name) is refused with 403, as the
// RBAC would. fail makes the next requests answer with that status.
type secretAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	secret *corev1.Secret // nil: missing
	rv     int
	fail   []int // statuses for the next requests
	// conflictNext: the next PUT finds the Secret changed (409).
	conflictNext bool
	gets         int
	puts         int
	refused      []string
}

const secretPath = "/api/v1/namespaces/minimesh-system/secrets/meshctl-operator"

func newSecretAPI(t *testing.T) *secretAPI {
	a := &secretAPI{t: t, rv: 1, secret: &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "meshctl-operator", Namespace: "minimesh-system", ResourceVersion: "1", Labels: map[string]string{"app.kubernetes.io/name": "meshctl"}},
		Type:       corev1.SecretTypeOpaque,
	}}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *secretAPI) client() kubernetes.Interface {
	c, err := kubernetes.NewForConfig(&rest.Config{Host: a.srv.URL, Timeout: 5 * time.Second})
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: string(reason)})
}

func (a *secretAPI) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.URL.Path != secretPath || (r.Method != http.MethodGet && r.Method != http.MethodPut) {
		a.refused = append(a.refused, r.Method+" "+r.URL.Path)
		writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden)
		return
	}
	if r.Method == http.MethodGet {
		a.gets++
	} else {
		a.puts++
	}
	if len(a.fail) > 0 {
		code := a.fail[0]
		a.fail = a.fail[1:]
		writeStatus(w, code, metav1.StatusReasonInternalError)
		return
	}
	if a.secret == nil {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound)
		return
	}
	if r.Method == http.MethodPut {
		// client-go sends protobuf or JSON.
		b, _ := io.ReadAll(r.Body)
		o, _, err := scheme.Codecs.UniversalDeserializer().Decode(b, nil, nil)
		s, ok := o.(*corev1.Secret)
		if err != nil || !ok || s.Name != a.secret.Name {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest)
			return
		}
		if s.ResourceVersion != a.secret.ResourceVersion || a.conflictNext {
			a.conflictNext = false
			writeStatus(w, http.StatusConflict, metav1.StatusReasonConflict)
			return
		}
		if r.URL.Query().Get("fieldManager") != "meshd" {
			writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest)
			return
		}
		a.rv++
		s.ResourceVersion = strconv.Itoa(a.rv)
		a.secret = s
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(a.secret)
}

func (a *secretAPI) data() map[string][]byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.secret == nil {
		return nil
	}
	return a.secret.Data
}

func (a *secretAPI) counts() (gets, puts int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gets, a.puts
}

// leaf parses the Secret's credential (nil when it holds none).
func (a *secretAPI) svid(t *testing.T) *x509svid.SVID {
	t.Helper()
	d := a.data()
	if len(d[certs.SVIDFile]) == 0 {
		return nil
	}
	s, err := x509svid.Parse(d[certs.SVIDFile], d[certs.SVIDKeyFile])
	if err != nil {
		t.Fatalf("the Secret's credential: %v", err)
	}
	return s
}

func pollFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// asMeshctl is meshctl in a pod: the Secret's three files as the kubelet
// mounts them (mode 0440), loaded as meshctl loads a mounted credential,
// meshd authenticated with the Secret's bundle.
func asMeshctl(t *testing.T, m *controlplanetest.Meshd, a *secretAPI) meshv1.AdminServiceClient {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "operator")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	for k, v := range a.data() {
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

func listedBy(t *testing.T, m *controlplanetest.Meshd, serial string) *meshv1.OperatorCredential {
	t.Helper()
	l, err := m.Operator(t).ListOperators(ctx(t), &meshv1.ListOperatorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range l.Operators {
		if o.Serial == serial {
			return o
		}
	}
	return nil
}

// meshd writes an operator credential into the empty Secret, recorded
// (issued_by operator:kube-secret) and working for meshctl as the kubelet
// mounts it; a revoked one is replaced; a root rotation's new root goes
// into the bundle at once and, once activated, a credential from it
// replaces the old one, which is left to expire (not revoked). Keys never
// reach the log.
func TestOperatorSecretWrittenReplacedOnRevocationAndRotation(t *testing.T) {
	t.Parallel()
	a := newSecretAPI(t)
	var logs syncBuffer
	m := controlplanetest.Start(t, controlplane.Config{
		Logger:         slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OperatorSecret: controlplane.OperatorSecretConfig{Kube: a.client(), Check: 10 * time.Millisecond, Resync: time.Hour},
		// The rotation moves on only when the test forces it.
		RotationCheck: time.Hour,
	})
	pollFor(t, "meshd writes the Secret", func() bool { return a.svid(t) != nil })
	first := a.svid(t)
	serial := authn.Serial(first.Certificates[0])
	if first.ID != certs.OperatorID(m.TrustDomain()) || !bytes.Equal(a.data()[certs.BundleFile], certs.EncodeCertsPEM(m.CA().Bundle().X509Authorities())) {
		t.Fatalf("the Secret holds %s with bundle %q", first.ID, a.data()[certs.BundleFile])
	}
	if rec := listedBy(t, m, serial); rec == nil || rec.IssuedBy != controlplane.IssuedToSecret {
		t.Fatalf("the Secret's credential %s is recorded as %+v", serial, rec)
	}
	// A real admin call with it, as meshctl in the cluster makes.
	v, err := asMeshctl(t, m, a).Version(ctx(t), &meshv1.VersionRequest{})
	if err != nil || v == nil {
		t.Fatalf("admin call with the Secret's credential: %v", err)
	}
	// Current: nothing is written again.
	_, puts := a.counts()
	time.Sleep(100 * time.Millisecond)
	if _, p := a.counts(); p != puts {
		t.Fatalf("%d writes of a current Secret", p-puts)
	}

	// Revoked (with the data dir's credential): replaced.
	if _, err := m.Operator(t).RevokeOperator(ctx(t), &meshv1.RevokeOperatorRequest{Serial: serial}); err != nil {
		t.Fatal(err)
	}
	pollFor(t, "a revoked credential is replaced", func() bool { return authn.Serial(a.svid(t).Certificates[0]) != serial })
	second := a.svid(t)
	if _, err := asMeshctl(t, m, a).Version(ctx(t), &meshv1.VersionRequest{}); err != nil {
		t.Fatalf("admin call with the re-issued credential: %v", err)
	}

	// A root rotation: prepared, the bundle gains the next root (the
	// credential stays); activated, a credential from the new root.
	st, err := m.Operator(t).RotateCA(ctx(t), &meshv1.RotateCARequest{})
	if err != nil {
		t.Fatal(err)
	}
	pollFor(t, "the next root in the Secret's bundle", func() bool {
		return bytes.Equal(a.data()[certs.BundleFile], certs.EncodeCertsPEM(m.CA().Bundle().X509Authorities())) && len(m.CA().Bundle().X509Authorities()) == 2
	})
	if authn.Serial(a.svid(t).Certificates[0]) != authn.Serial(second.Certificates[0]) {
		t.Fatal("the credential was re-issued when only the bundle changed")
	}
	if _, err := m.Operator(t).RotateCA(ctx(t), &meshv1.RotateCARequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	pollFor(t, "a credential from the new root", func() bool {
		c := a.svid(t).Certificates
		return authn.Serial(c[0]) != authn.Serial(second.Certificates[0]) && c[len(c)-1].CheckSignatureFrom(m.CA().Root()) == nil
	})
	if m.RootPin() != st.Status.Next.Pin {
		t.Fatalf("active root %s, want %s", m.RootPin(), st.Status.Next.Pin)
	}
	if _, err := asMeshctl(t, m, a).Version(ctx(t), &meshv1.VersionRequest{}); err != nil {
		t.Fatalf("admin call after the rotation: %v", err)
	}
	if rec := listedBy(t, m, authn.Serial(second.Certificates[0])); rec == nil || rec.Revoked {
		t.Errorf("the replaced credential: %+v, want it listed and left to expire", rec)
	}
	// The retired root dropped: the bundle alone is rewritten.
	if _, err := m.Operator(t).RotateCA(ctx(t), &meshv1.RotateCARequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	pollFor(t, "the retired root leaves the Secret's bundle", func() bool {
		return bytes.Equal(a.data()[certs.BundleFile], certs.EncodeCertsPEM(m.CA().Bundle().X509Authorities())) && len(m.CA().Bundle().X509Authorities()) == 1
	})
	counter := func(r string) float64 { return m.Counter(t, "minimesh_meshd_operator_secret_syncs_total", "result", r) }
	// Three credentials issued and two bundles written. A sync the
	// machine's load made fail (its API call past the client's timeout)
	// is counted as an error and retried, and the retry may find the
	// write already done: only without errors must the counts be exact.
	pollFor(t, "five writes counted", func() bool { return counter("issued")+counter("bundle")+counter("error") >= 5 })
	if errs := counter("error"); errs == 0 && (counter("issued") != 3 || counter("bundle") != 2) {
		t.Errorf("syncs counted: issued %v, bundle %v, want 3 and 2", counter("issued"), counter("bundle"))
	} else if errs > 0 {
		t.Logf("%v syncs failed under load (issued %v, bundle %v)", errs, counter("issued"), counter("bundle"))
	}
	if a.refused != nil {
		t.Errorf("meshd asked the API for more than that Secret: %v", a.refused)
	}
	m.Stop()
	if strings.Contains(logs.String(), "PRIVATE KEY") || !strings.Contains(logs.String(), "wrote a new operator credential into the Secret") {
		t.Errorf("log:\n%s", logs.String())
	}
}

// Past half its life the credential is renewed, not before (meshd's
// clock, moved by hand); the one it replaces stays valid until it expires.
func TestOperatorSecretRenewedAtHalfLife(t *testing.T) {
	t.Parallel()
	a := newSecretAPI(t)
	clock := certstest.NewClock(time.Now())
	m := controlplanetest.Start(t, controlplane.Config{
		Clock:          clock,
		OperatorTTL:    time.Hour,
		OperatorSecret: controlplane.OperatorSecretConfig{Kube: a.client(), Check: 5 * time.Millisecond, Resync: time.Hour},
	})
	pollFor(t, "meshd writes the Secret", func() bool { return a.svid(t) != nil })
	first := a.svid(t).Certificates[0]
	issued := func() float64 { return m.Counter(t, "minimesh_meshd_operator_secret_syncs_total", "result", "issued") }
	clock.Set(first.NotAfter.Add(-30*time.Minute - time.Millisecond))
	time.Sleep(50 * time.Millisecond) // ten checks: none may renew it
	if authn.Serial(a.svid(t).Certificates[0]) != authn.Serial(first) || issued() != 1 {
		t.Fatalf("renewed before half its life (%v issued)", issued())
	}
	clock.Add(time.Millisecond)
	pollFor(t, "renewed", func() bool { return authn.Serial(a.svid(t).Certificates[0]) != authn.Serial(first) })
	pollFor(t, "the renewal counted", func() bool { return issued() == 2 })
	if rec := listedBy(t, m, authn.Serial(first)); rec == nil || rec.Revoked {
		t.Errorf("the renewed-away credential %+v: want it listed, not revoked", rec)
	}
}

// The Kubernetes API failing: each failure is counted and retried after
// 1 s, then 2 s, ... (meshd's clock, held still here, so nothing is
// retried early); a Conflict (someone changed the Secret meanwhile) is
// retried the same way; a missing Secret is an error naming it and is
// never created. Nothing is written while the API fails.
func TestOperatorSecretAPIErrorsBackOff(t *testing.T) {
	t.Parallel()
	a := newSecretAPI(t)
	a.fail = []int{500, 500, 503}
	clock := certstest.NewClock(time.Now())
	var logs syncBuffer
	m := controlplanetest.Start(t, controlplane.Config{
		Clock:          clock,
		Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
		OperatorSecret: controlplane.OperatorSecretConfig{Kube: a.client(), Check: 5 * time.Millisecond, Resync: time.Hour},
	})
	errors := func() float64 { return m.Counter(t, "minimesh_meshd_operator_secret_syncs_total", "result", "error") }
	pollFor(t, "the first failure", func() bool { return errors() == 1 })
	for _, step := range []struct {
		wait       time.Duration // the backoff in force
		wantErrors float64
	}{{time.Second, 2}, {2 * time.Second, 3}} {
		clock.Add(step.wait - time.Millisecond)
		time.Sleep(50 * time.Millisecond) // ten checks: none may ask the API
		if g, _ := a.counts(); errors() != step.wantErrors-1 || g != int(step.wantErrors-1) {
			t.Fatalf("before the %v backoff ended: %v errors, %d requests", step.wait, errors(), g)
		}
		clock.Add(time.Millisecond)
		pollFor(t, "the retry after "+step.wait.String(), func() bool { return errors() == step.wantErrors })
	}
	if a.svid(t) != nil {
		t.Fatal("written while the API failed")
	}
	// The next retry (4 s) succeeds.
	clock.Add(4 * time.Second)
	pollFor(t, "written once the API answers", func() bool { return a.svid(t) != nil })

	// A Conflict on the write (the Secret changed between meshd's read
	// and its write): counted, retried after 1 s, written.
	a.mu.Lock()
	a.secret.Data = nil
	a.conflictNext = true
	a.mu.Unlock()
	before := errors()
	clock.Add(2 * time.Hour) // past Resync: meshd reads the Secret again
	pollFor(t, "the conflict", func() bool { return errors() == before+1 })
	clock.Add(time.Second)
	pollFor(t, "rewritten after the conflict", func() bool { return a.svid(t) != nil })

	// Missing: an error naming the Secret; meshd does not create it.
	a.mu.Lock()
	a.secret = nil
	a.mu.Unlock()
	before = errors()
	clock.Add(2 * time.Hour)
	pollFor(t, "a missing Secret is an error", func() bool { return errors() > before })
	if a.refused != nil {
		t.Errorf("meshd asked for more than get/update of the Secret: %v", a.refused)
	}
	m.Stop()
	if l := logs.String(); !strings.Contains(l, "meshctl-operator: it does not exist") || strings.Contains(l, "PRIVATE KEY") {
		t.Errorf("log:\n%s", l)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
