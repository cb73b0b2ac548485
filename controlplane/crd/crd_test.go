package crd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	clienttesting "k8s.io/client-go/testing"

	"minimesh/api"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/crd"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// fakeAPI is the Kubernetes API: client-go's dynamic fake, which keeps
// objects and serves watches (the outside world; meshd is real).
func fakeAPI() *dynamicfake.FakeDynamicClient {
	lists := map[schema.GroupVersionResource]string{}
	for _, k := range api.Kinds() {
		lists[crd.Resource(k)] = string(k) + "List"
	}
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), lists)
}

func obj(kind, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": api.APIVersion, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec":     spec,
	}}
}

func service(name string) *unstructured.Unstructured {
	return obj("Service", name, map[string]any{
		"ports":             []any{map[string]any{"port": int64(8080), "protocol": "http"}},
		"servingIdentities": []any{"spiffe://minimesh.local/ns/default/sa/" + name},
	})
}

func route(name, svc string) *unstructured.Unstructured {
	return obj("Route", name, map[string]any{"service": svc, "backends": []any{map[string]any{"service": svc}}})
}

type env struct {
	t   *testing.T
	m   *controlplanetest.Meshd
	dyn dynamic.Interface
	ctx context.Context
}

// start runs meshd reconciling the fake API's objects; resync is how
// often it looks at every object again.
func start(t *testing.T, resync time.Duration) *env {
	dyn := fakeAPI()
	m := controlplanetest.Start(t, controlplane.Config{CRD: controlplane.CRDConfig{Dynamic: dyn, Resync: resync, StatusEvery: 200 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return &env{t: t, m: m, dyn: dyn, ctx: ctx}
}

func (e *env) res(kind string) dynamic.ResourceInterface {
	return e.dyn.Resource(crd.Resource(api.Kind(kind))).Namespace("default")
}

func (e *env) create(u *unstructured.Unstructured) {
	e.t.Helper()
	if _, err := e.res(u.GetKind()).Create(e.ctx, u, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(kind, name string) *unstructured.Unstructured {
	e.t.Helper()
	u, err := e.res(kind).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

// condition returns the condition typ of the object: status, reason, message.
func condition(u *unstructured.Unstructured, typ string) (string, string, string) {
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, e := range list {
		c, _ := e.(map[string]any)
		if c["type"] == typ {
			return fmt.Sprint(c["status"]), fmt.Sprint(c["reason"]), fmt.Sprint(c["message"])
		}
	}
	return "", "", ""
}

func (e *env) waitCondition(kind, name, typ, status, reason string) (message string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		u := e.get(kind, name)
		s, r, msg := condition(u, typ)
		if s == status && r == reason {
			return msg
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s %s: condition %s is %q %q %q, want %s %s", kind, name, typ, s, r, msg, status, reason)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) stored(kind, name string) (*meshv1.Resource, bool) {
	e.t.Helper()
	resp, err := e.m.Operator(e.t).GetResources(e.ctx, &meshv1.GetResourcesRequest{Kind: kind, Namespace: "default", Name: name})
	if err != nil {
		return nil, false
	}
	return resp.GetResources()[0], true
}

// A Route created before its Service is Rejected naming the reference,
// and is applied as soon as the Service comes (no resync needed: any
// event retries what is Rejected); both carry the finalizer and are in
// meshd's store; the status has the revision.
func TestAnyOrderConverges(t *testing.T) {
	e := start(t, time.Hour)
	e.create(route("api", "api"))
	msg := e.waitCondition("Route", "api", crd.ConditionAccepted, "False", crd.ReasonRejected)
	if !strings.Contains(msg, "spec.service") || !strings.Contains(msg, `Service "default/api" not found`) {
		t.Fatalf("Rejected message %q", msg)
	}
	if _, ok := e.stored("Route", "api"); ok {
		t.Fatal("a rejected Route is in the store")
	}
	e.create(service("api"))
	e.waitCondition("Route", "api", crd.ConditionAccepted, "True", crd.ReasonAccepted)
	e.waitCondition("Service", "api", crd.ConditionAccepted, "True", crd.ReasonAccepted)
	r, ok := e.stored("Route", "api")
	if !ok {
		t.Fatal("the accepted Route is not in meshd's store")
	}
	u := e.get("Route", "api")
	if !slices.Contains(u.GetFinalizers(), crd.Finalizer) {
		t.Fatalf("finalizers %v", u.GetFinalizers())
	}
	rev, _, _ := unstructured.NestedInt64(u.Object, "status", "revision")
	if uint64(rev) != r.GetRevision() {
		t.Fatalf("status.revision %d, stored at %d", rev, r.GetRevision())
	}

	// A change of spec is applied; an invalid one is Rejected with the
	// field and reason and the last good one stays in force.
	u.Object["spec"].(map[string]any)["timeout"] = "2s"
	if _, err := e.res("Route").Update(e.ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for r, _ := e.stored("Route", "api"); r.GetRoute().GetTimeout().AsDuration() != 2*time.Second; r, _ = e.stored("Route", "api") {
		if time.Now().After(deadline) {
			t.Fatal("the Route's new timeout never reached the store")
		}
		time.Sleep(20 * time.Millisecond)
	}
	u = e.get("Route", "api")
	u.Object["spec"].(map[string]any)["timeout"] = "-1s"
	if _, err := e.res("Route").Update(e.ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	msg = e.waitCondition("Route", "api", crd.ConditionAccepted, "False", crd.ReasonInvalid)
	if !strings.Contains(msg, "spec.timeout: must be positive") {
		t.Fatalf("Invalid message %q", msg)
	}
	if r, _ := e.stored("Route", "api"); r.GetRoute().GetTimeout().AsDuration() != 2*time.Second {
		t.Fatalf("the store's Route changed to %v", r.GetRoute().GetTimeout())
	}
}

// Ownership: meshctl apply and delete refuse what Kubernetes applied; the
// reconciler refuses to overwrite what meshctl applied (OwnedByMeshctl).
func TestOwnership(t *testing.T) {
	e := start(t, 200*time.Millisecond)
	e.create(service("api"))
	e.waitCondition("Service", "api", crd.ConditionAccepted, "True", crd.ReasonAccepted)
	op := e.m.Operator(t)
	svc, _ := e.stored("Service", "api")
	_, err := op.Apply(e.ctx, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{svc}})
	if err == nil || !strings.Contains(err.Error(), "applied from Kubernetes") {
		t.Fatalf("meshctl apply over a CRD's Service: %v", err)
	}
	if _, err := op.DeleteResource(e.ctx, &meshv1.DeleteResourceRequest{Kind: "Service", Namespace: "default", Name: "api"}); err == nil || !strings.Contains(err.Error(), "applied from Kubernetes") {
		t.Fatalf("meshctl delete of a CRD's Service: %v", err)
	}

	byMeshctl := &meshv1.Resource{ApiVersion: api.APIVersion, Kind: "Service", Namespace: "default", Name: "web", Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{
		Ports: []*meshv1.ServicePort{{Port: 80, Protocol: meshv1.Protocol_PROTOCOL_HTTP}}, ServingIdentities: []string{"spiffe://minimesh.local/ns/default/sa/web"}}}}
	if _, err := op.Apply(e.ctx, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{byMeshctl}}); err != nil {
		t.Fatal(err)
	}
	e.create(service("web"))
	msg := e.waitCondition("Service", "web", crd.ConditionAccepted, "False", crd.ReasonOwnedByMeshctl)
	if !strings.Contains(msg, "meshctl") {
		t.Fatalf("OwnedByMeshctl message %q", msg)
	}
	if r, _ := e.stored("Service", "web"); r.GetService().GetPorts()[0].GetPort() != 80 {
		t.Fatalf("the reconciler overwrote meshctl's Service: %v", r)
	}
	// A Route of Kubernetes may refer to meshctl's Service.
	e.create(route("to-web", "web"))
	e.waitCondition("Route", "to-web", crd.ConditionAccepted, "True", crd.ReasonAccepted)
	// Deleting the refused object lets it go and leaves meshctl's alone.
	e.markDeleted("Service", "web")
	e.waitFinalized("Service", "web")
	if _, ok := e.stored("Service", "web"); !ok {
		t.Fatal("deleting the refused object deleted meshctl's Service")
	}
}

// markDeleted does what the API server does on delete of an object with
// finalizers: it sets deletionTimestamp and keeps the object.
func (e *env) markDeleted(kind, name string) {
	e.t.Helper()
	u := e.get(kind, name)
	now := metav1.Now()
	u.SetDeletionTimestamp(&now)
	if _, err := e.res(kind).Update(e.ctx, u, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) waitFinalized(kind, name string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for slices.Contains(e.get(kind, name).GetFinalizers(), crd.Finalizer) {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s %s keeps its finalizer", kind, name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A delete meshd refuses (a Route refers to the Service) leaves the
// finalizer and DeleteBlocked naming the Route; once the Route is deleted
// the Service leaves the store and its finalizer goes.
func TestDeleteBlockedThenDone(t *testing.T) {
	e := start(t, 200*time.Millisecond)
	e.create(service("web"))
	e.create(route("to-web", "web"))
	e.waitCondition("Route", "to-web", crd.ConditionAccepted, "True", crd.ReasonAccepted)
	e.waitCondition("Service", "web", crd.ConditionAccepted, "True", crd.ReasonAccepted)

	e.markDeleted("Service", "web")
	msg := e.waitCondition("Service", "web", crd.ConditionDeleteBlocked, "True", crd.ReasonReferred)
	if !strings.Contains(msg, `Route "default/to-web"`) {
		t.Fatalf("DeleteBlocked message %q", msg)
	}
	if !slices.Contains(e.get("Service", "web").GetFinalizers(), crd.Finalizer) {
		t.Fatal("the blocked Service lost its finalizer")
	}
	if _, ok := e.stored("Service", "web"); !ok {
		t.Fatal("the blocked Service left the store")
	}

	e.markDeleted("Route", "to-web")
	e.waitFinalized("Route", "to-web")
	e.waitFinalized("Service", "web")
	if _, ok := e.stored("Service", "web"); ok {
		t.Fatal("the deleted Service is still in the store")
	}
	if _, ok := e.stored("Route", "to-web"); ok {
		t.Fatal("the deleted Route is still in the store")
	}
}

// AckedAt counts what meshctl apply --wait waits for.
func TestAckedAt(t *testing.T) {
	p := func(connected bool, rev uint64, cur, acked string) *meshv1.ProxySync {
		return &meshv1.ProxySync{Proxy: &meshv1.Proxy{Connected: connected}, Revision: rev, CurrentVersion: cur, AckedVersion: acked}
	}
	ps := []*meshv1.ProxySync{
		p(true, 7, "a", "a"),  // counts
		p(true, 9, "b", "b"),  // counts: a later revision covers 7
		p(true, 6, "c", "c"),  // before the revision
		p(true, 8, "d", "x"),  // not ACKed yet
		p(false, 8, "e", "e"), // disconnected
	}
	if n := crd.AckedAt(ps, 7); n != 2 {
		t.Fatalf("AckedAt = %d, want 2", n)
	}
}

// Plural names each kind as crdgen names its CRD file.
func TestPluralMatchesTheCRDFiles(t *testing.T) {
	for _, k := range api.Kinds() {
		f := filepath.Join("../../deploy/k8s/crds", crd.Plural(k)+".minimesh.io.yaml")
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s: %v (run make crds)", k, err)
		}
	}
	if crd.Plural(api.KindAuthorizationPolicy) != "authorizationpolicies" || crd.Plural(api.KindService) != "services" {
		t.Fatal(crd.Plural(api.KindAuthorizationPolicy))
	}
}

// A kind whose CRD is not installed (the API answers 404) does not stop
// the others; once it is, it is watched at the next resync.
func TestMissingCRDDoesNotStopTheOthers(t *testing.T) {
	dyn := fakeAPI()
	var installed atomic.Bool
	dyn.PrependReactor("list", crd.Plural(api.KindRoute), func(clienttesting.Action) (bool, runtime.Object, error) {
		if installed.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewNotFound(crd.Resource(api.KindRoute).GroupResource(), "")
	})
	m := controlplanetest.Start(t, controlplane.Config{CRD: controlplane.CRDConfig{Dynamic: dyn, Resync: 100 * time.Millisecond, StatusEvery: 100 * time.Millisecond}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &env{t: t, m: m, dyn: dyn, ctx: ctx}
	e.create(service("api"))
	e.waitCondition("Service", "api", crd.ConditionAccepted, "True", crd.ReasonAccepted)
	e.create(route("api", "api"))
	time.Sleep(300 * time.Millisecond) // three resyncs: Routes are not watched
	if s, _, _ := condition(e.get("Route", "api"), crd.ConditionAccepted); s != "" {
		t.Fatalf("a Route of an unwatched kind has a condition %q", s)
	}
	installed.Store(true)
	e.waitCondition("Route", "api", crd.ConditionAccepted, "True", crd.ReasonAccepted)
}

// Only the leader reconciles: a follower neither applies, nor adds the
// finalizer, nor writes status.
func TestFollowerDoesNothing(t *testing.T) {
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "data.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dyn := fakeAPI()
	r, err := crd.New(crd.Config{Dynamic: dyn, Admin: refuseAll{t}, Store: st, IsLeader: func() bool { return false },
		Sync: func() ([]*meshv1.ProxySync, error) { return nil, nil }, Resync: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	e := &env{t: t, dyn: dyn, ctx: ctx}
	e.create(service("api"))
	time.Sleep(300 * time.Millisecond) // six resyncs
	u := e.get("Service", "api")
	if len(u.GetFinalizers()) != 0 || u.Object["status"] != nil {
		t.Fatalf("a follower changed the object: %v", u.Object)
	}
}

// refuseAll fails the test if the reconciler applies or deletes anything.
type refuseAll struct{ t *testing.T }

func (a refuseAll) ApplyFrom(context.Context, *meshv1.ApplyRequest, string) (*meshv1.ApplyResponse, error) {
	a.t.Error("a follower applied")
	return nil, errors.New("refused")
}

func (a refuseAll) DeleteResourceFrom(context.Context, *meshv1.DeleteResourceRequest, string) (*meshv1.DeleteResourceResponse, error) {
	a.t.Error("a follower deleted")
	return nil, errors.New("refused")
}

// An object whose finalizer was removed by hand and that was then deleted
// leaves the store when meshd sees the delete; one deleted while meshd was
// stopped leaves it at the restart's resync. meshctl's objects are never
// touched.
func TestObjectsKubernetesNoLongerHasLeaveTheStore(t *testing.T) {
	e := start(t, 200*time.Millisecond)
	for _, name := range []string{"by-hand", "while-away"} {
		e.create(service(name))
		e.waitCondition("Service", name, crd.ConditionAccepted, "True", crd.ReasonAccepted)
	}
	mine := &meshv1.Resource{ApiVersion: "minimesh.io/v1alpha1", Kind: "Service", Name: "meshctls", Namespace: "default",
		Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{Ports: []*meshv1.ServicePort{{Name: "http", Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
			ServingIdentities: []string{"spiffe://minimesh.local/ns/default/sa/meshctls"}}}}
	if _, err := e.m.Operator(t).Apply(e.ctx, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{mine}}); err != nil {
		t.Fatal(err)
	}

	u := e.get("Service", "by-hand")
	u.SetFinalizers(nil)
	if _, err := e.res("Service").Update(e.ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.res("Service").Delete(e.ctx, "by-hand", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitGone("Service", "by-hand")

	e.m.Stop()
	if err := e.res("Service").Delete(e.ctx, "while-away", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.m = e.m.Restart(t)
	e.waitGone("Service", "while-away")
	time.Sleep(500 * time.Millisecond) // two resyncs
	if _, ok := e.stored("Service", "meshctls"); !ok {
		t.Fatal("meshctl's object left the store")
	}
}

func (e *env) waitGone(kind, name string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := e.stored(kind, name); !ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s %s, gone from Kubernetes, is still in the store", kind, name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
