// Package crd is meshd's reconciler of the minimesh.io custom resources
// (deploy/k8s/crds, one CRD per api kind): with Kubernetes API access it
// watches every kind (client-go dynamic informers) and, on the leader,
// applies each object through admin's Apply (ApplyFrom with
// store.SourceKubernetes): the same strict decoding, validation and
// reference checks as `meshctl apply`.
//
// Reconciliation is level-triggered. An object that is Rejected (invalid,
// a reference that does not resolve, owned by meshctl) or whose delete
// is blocked is retried whenever any minimesh.io object changes, and every
// object is looked at again every Resync, so `kubectl apply -f dir/` in any
// order converges.
//
// Each object carries the finalizer minimesh.io/store, added before it is
// applied and removed once meshd has deleted it from its store; a delete
// meshd refuses (another object still refers to it) leaves the object
// Terminating with the condition DeleteBlocked naming the referrer. An
// object meshd stored from Kubernetes that the API no longer has (its
// finalizer removed by hand, or deleted while no meshd watched) is deleted
// from the store when its delete is seen and at every resync.
//
// Status: the condition Accepted (True; False with reason Invalid,
// Rejected or OwnedByMeshctl and the message meshctl apply would print),
// observedGeneration, the store revision that holds the object and how
// many connected proxies ACKed a snapshot at or after it. A change of
// condition, generation or revision is written at once; a change of the
// ACK count alone at most once per StatusEvery (10 s) per object.
package crd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/controlplane/admin"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// Group and Version of the CRDs (api.APIVersion).
const (
	Group   = "minimesh.io"
	Version = "v1alpha1"
)

// Finalizer keeps an object until meshd has deleted it from its store.
const Finalizer = "minimesh.io/store"

// Condition types and reasons.
const (
	ConditionAccepted      = "Accepted"
	ConditionDeleteBlocked = "DeleteBlocked"

	ReasonAccepted       = "Accepted"
	ReasonInvalid        = "Invalid"  // api.Decode refused it: a field and its reason
	ReasonRejected       = "Rejected" // Apply refused it (a reference, a limit)
	ReasonOwnedByMeshctl = admin.OwnedByMeshctl
	ReasonReferred       = "Referred"
)

// Plural is kind's resource name: its lower-case plural ("services",
// "authorizationpolicies"), as api.ParseKind reads it and crdgen names
// the CRD.
func Plural(k api.Kind) string {
	n := strings.ToLower(string(k))
	if strings.HasSuffix(n, "y") {
		return n[:len(n)-1] + "ies"
	}
	return n + "s"
}

// Resource is kind's GroupVersionResource.
func Resource(k api.Kind) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: Group, Version: Version, Resource: Plural(k)}
}

// Admin is what the reconciler needs of the admin server: the one Apply.
type Admin interface {
	ApplyFrom(ctx context.Context, req *meshv1.ApplyRequest, source string) (*meshv1.ApplyResponse, error)
	DeleteResourceFrom(ctx context.Context, req *meshv1.DeleteResourceRequest, source string) (*meshv1.DeleteResourceResponse, error)
}

// Config configures the reconciler.
type Config struct {
	Dynamic dynamic.Interface
	Admin   Admin
	Store   *store.Store
	// Sync is the push server's sync state of every proxy (ACK counts).
	Sync func() ([]*meshv1.ProxySync, error)
	// IsLeader: only the leader reconciles (nil: always).
	IsLeader func() bool
	// Resync: every object is looked at again this often (default 10s).
	Resync time.Duration
	// StatusEvery: an ACK count alone is written at most this often per
	// object (default 10s).
	StatusEvery time.Duration
	// Timeout bounds each API call (default 10s).
	Timeout time.Duration
	Clock   certs.Clock
	Logger  *slog.Logger
}

type key struct {
	kind      api.Kind
	namespace string
	name      string
}

func (k key) String() string { return fmt.Sprintf("%s %s/%s", k.kind, k.namespace, k.name) }

// Reconciler watches the minimesh.io objects and applies them.
type Reconciler struct {
	cfg       Config
	informers map[api.Kind]cache.SharedIndexInformer
	queue     workqueue.TypedRateLimitingInterface[key]

	mu      sync.Mutex
	retry   map[key]bool      // Rejected or DeleteBlocked: retried on any event
	written map[key]time.Time // when the status was last written
	acks    ackCache
}

// New builds the reconciler; Run starts it.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Dynamic == nil || cfg.Admin == nil || cfg.Store == nil || cfg.Sync == nil {
		return nil, errors.New("crd: Config.Dynamic, Admin, Store and Sync are required")
	}
	if cfg.IsLeader == nil {
		cfg.IsLeader = func() bool { return true }
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.StatusEvery <= 0 {
		cfg.StatusEvery = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reconciler{
		cfg:       cfg,
		informers: map[api.Kind]cache.SharedIndexInformer{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[key](500*time.Millisecond, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "minimesh_crd"}),
		retry:   map[key]bool{},
		written: map[key]time.Time{},
	}
	r.acks.sync = cfg.Sync
	factory := dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, 0)
	for _, k := range api.Kinds() {
		inf := factory.ForResource(Resource(k)).Informer()
		kind := k
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { r.event(kind, o) },
			UpdateFunc: func(_, o any) { r.event(kind, o) },
			DeleteFunc: func(o any) { r.event(kind, o) },
		})
		if err != nil {
			return nil, err
		}
		r.informers[k] = inf
	}
	return r, nil
}

// event queues the object and every object waiting for a change.
func (r *Reconciler) event(kind api.Kind, o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return
	}
	r.queue.Add(key{kind, u.GetNamespace(), u.GetName()})
	r.mu.Lock()
	waiting := make([]key, 0, len(r.retry))
	for k := range r.retry {
		waiting = append(waiting, k)
	}
	r.mu.Unlock()
	for _, k := range waiting {
		r.queue.Add(k)
	}
}

// Run watches and reconciles until ctx ends. A kind whose CRD is not
// installed (or that RBAC does not let meshd list) is logged and looked
// for again every Resync; the others are reconciled meanwhile.
func (r *Reconciler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r.next(ctx) {
		}
	}()
	started := map[api.Kind]bool{}
	failed := map[api.Kind]string{} // the last probe error logged
	startKinds := func() {
		for _, k := range api.Kinds() {
			if started[k] {
				continue
			}
			if err := r.probe(ctx, k); err != nil {
				if failed[k] != err.Error() {
					failed[k] = err.Error()
					r.cfg.Logger.Warn("cannot watch a minimesh.io kind (is its CRD installed: kubectl apply -k deploy/k8s/crds? does meshd's ClusterRole list it?); looking again every resync", "resource", Resource(k).String(), "error", err, "resync", r.cfg.Resync)
				}
				continue
			}
			delete(failed, k)
			started[k] = true
			inf := r.informers[k]
			wg.Add(1)
			go func() { defer wg.Done(); inf.RunWithContext(ctx) }()
			r.cfg.Logger.Info("watching a minimesh.io kind", "resource", Resource(k).String())
		}
	}
	startKinds()
	tick := time.NewTicker(r.cfg.Resync)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			r.queue.ShutDown()
			return nil
		case <-tick.C:
			startKinds()
			r.requeueAll()
		}
	}
}

// probe lists one object of kind: whether meshd can watch it.
func (r *Reconciler) probe(ctx context.Context, k api.Kind) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	_, err := r.cfg.Dynamic.Resource(Resource(k)).List(ctx, metav1.ListOptions{Limit: 1})
	return err
}

// requeueAll queues every object (the resync: ACK counts, a Service that
// meshctl applied, a leader that just took over), and every object meshd
// stored from Kubernetes that the API no longer has (collect).
func (r *Reconciler) requeueAll() {
	for k, inf := range r.informers {
		for _, o := range inf.GetStore().List() {
			if u, ok := o.(*unstructured.Unstructured); ok {
				r.queue.Add(key{k, u.GetNamespace(), u.GetName()})
			}
		}
	}
	if !r.cfg.IsLeader() {
		return
	}
	err := r.cfg.Store.View(func(rd *store.Reader) error {
		recs, err := rd.List(store.TableResources, "id")
		if err != nil {
			return err
		}
		for _, rec := range recs {
			res := rec.(*store.Resource)
			k := key{api.Kind(res.Kind), res.Namespace, res.Name}
			if _, watched := r.informers[k.kind]; !watched || res.Source != store.SourceKubernetes {
				continue
			}
			if _, ok := r.get(k); !ok {
				r.queue.Add(k)
			}
		}
		return nil
	})
	if err != nil {
		r.cfg.Logger.Warn("could not list the stored objects to find those Kubernetes no longer has; looking again at the next resync", "error", err)
	}
}

func (r *Reconciler) next(ctx context.Context) bool {
	k, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(k)
	if !r.cfg.IsLeader() {
		r.queue.Forget(k) // the resync brings it back when this replica leads
		return true
	}
	requeue, err := r.reconcile(ctx, k)
	switch {
	case err != nil:
		r.cfg.Logger.Warn("could not reconcile a minimesh.io object; retrying", "object", k.String(), "error", err)
		r.queue.AddRateLimited(k)
	case requeue > 0:
		r.queue.Forget(k)
		r.queue.AddAfter(k, requeue)
	default:
		r.queue.Forget(k)
	}
	return true
}

func (r *Reconciler) get(k key) (*unstructured.Unstructured, bool) {
	o, ok, err := r.informers[k.kind].GetStore().GetByKey(k.namespace + "/" + k.name)
	if err != nil || !ok {
		return nil, false
	}
	u, ok := o.(*unstructured.Unstructured)
	return u, ok
}

func (r *Reconciler) setRetry(k key, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.retry[k] = true
	} else {
		delete(r.retry, k)
	}
}

// reconcile brings one object's store state and status in line; requeue > 0
// asks to look again after it (a throttled status write).
func (r *Reconciler) reconcile(ctx context.Context, k key) (requeue time.Duration, err error) {
	u, ok := r.get(k)
	if !ok {
		r.setRetry(k, false)
		r.mu.Lock()
		delete(r.written, k)
		r.mu.Unlock()
		return 0, r.collect(ctx, k)
	}
	if u.GetDeletionTimestamp() != nil {
		return r.finalize(ctx, k, u)
	}
	if !slices.Contains(u.GetFinalizers(), Finalizer) {
		// First the finalizer: an object meshd stored is never deleted
		// from Kubernetes without meshd deleting it from its store.
		return 0, r.patchFinalizers(ctx, k, u, append(u.GetFinalizers(), Finalizer))
	}
	st := r.apply(ctx, k, u)
	r.setRetry(k, st.accepted.Status != metav1.ConditionTrue)
	return r.writeStatus(ctx, k, u, st)
}

// Object decodes u as api.Decode reads a document: strictly, validated.
func Object(u *unstructured.Unstructured) (api.Object, error) {
	doc := map[string]any{
		"apiVersion": u.GetAPIVersion(),
		"kind":       u.GetKind(),
		"metadata":   map[string]any{"name": u.GetName(), "namespace": u.GetNamespace()},
		"spec":       u.Object["spec"],
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	docs, err := api.Decode(u.GetKind()+" "+u.GetNamespace()+"/"+u.GetName(), strings.NewReader(string(b)))
	if err != nil {
		// The object is the whole input: its field errors say it all,
		// without the document and line of a file nobody wrote.
		if fes := api.FieldErrors(err); len(fes) > 0 {
			msgs := make([]string, len(fes))
			for i, fe := range fes {
				msgs[i] = fe.Error()
			}
			return nil, errors.New(strings.Join(msgs, "; "))
		}
		return nil, err
	}
	if len(docs) != 1 {
		return nil, errors.New("spec: required")
	}
	return docs[0].Object, nil
}

type state struct {
	accepted metav1.Condition
	blocked  *metav1.Condition
	revision uint64
}

// apply applies u (when its spec differs from the store's) and says how it
// went.
func (r *Reconciler) apply(ctx context.Context, k key, u *unstructured.Unstructured) state {
	rejected := func(reason, msg string) state {
		return state{accepted: metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionFalse, Reason: reason, Message: msg}}
	}
	o, err := Object(u)
	if err != nil {
		return rejected(ReasonInvalid, err.Error())
	}
	stored, source, ok, err := r.stored(api.KeyOf(o))
	if err != nil {
		return rejected(ReasonRejected, "meshd's store: "+err.Error())
	}
	if ok && source != store.SourceKubernetes {
		return rejected(ReasonOwnedByMeshctl, fmt.Sprintf("%s was applied by meshctl apply: meshd does not overwrite it; delete it with meshctl delete first, or rename this object", api.KeyOf(o)))
	}
	if !ok || !proto.Equal(stored.SpecMessage(), o.SpecMessage()) {
		actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		_, err := r.cfg.Admin.ApplyFrom(actx, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{api.ToProto(o)}}, store.SourceKubernetes)
		cancel()
		if err != nil {
			reason := ReasonRejected
			if status.Code(err) == codes.FailedPrecondition && strings.Contains(err.Error(), admin.OwnedByMeshctl) {
				reason = ReasonOwnedByMeshctl
			}
			return rejected(reason, status.Convert(err).Message())
		}
		if stored, _, ok, err = r.stored(api.KeyOf(o)); err != nil || !ok {
			return rejected(ReasonRejected, "applied, but not found in meshd's store after")
		}
		r.cfg.Logger.Info("applied a minimesh.io object", "object", k.String(), "revision", stored.Meta().Revision)
	}
	return state{
		accepted: metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted, Message: fmt.Sprintf("in meshd's store at revision %d", stored.Meta().Revision)},
		revision: stored.Meta().Revision,
	}
}

func (r *Reconciler) stored(k api.Key) (o api.Object, source string, ok bool, err error) {
	err = r.cfg.Store.View(func(rd *store.Reader) error {
		if o, ok, err = rd.Object(k); err != nil || !ok {
			return err
		}
		source, _, err = rd.ObjectSource(k)
		return err
	})
	return o, source, ok, err
}

// collect deletes from the store an object meshd stored from Kubernetes
// that the API no longer has: deleted after someone removed meshd's
// finalizer by hand, or while no meshd was watching. Only once the kind's
// informer has synced (an empty cache is not an empty API); a delete the
// store refuses (still referred to) is logged and tried at each resync.
func (r *Reconciler) collect(ctx context.Context, k key) error {
	inf, watched := r.informers[k.kind]
	if !watched || !inf.HasSynced() {
		return nil // the resync brings it back
	}
	_, source, stored, err := r.stored(api.Key{Kind: k.kind, Namespace: k.namespace, Name: k.name})
	if err != nil || !stored || source != store.SourceKubernetes {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	_, err = r.cfg.Admin.DeleteResourceFrom(actx, &meshv1.DeleteResourceRequest{Kind: string(k.kind), Namespace: k.namespace, Name: k.name}, store.SourceKubernetes)
	cancel()
	switch status.Code(err) {
	case codes.OK:
		r.cfg.Logger.Warn("deleted from the store a minimesh.io object that Kubernetes no longer has (its finalizer removed by hand, or deleted while no meshd watched)", "object", k.String())
	case codes.NotFound:
	case codes.FailedPrecondition:
		r.cfg.Logger.Warn("a minimesh.io object that Kubernetes no longer has stays in the store: another object refers to it; trying again at each resync", "object", k.String(), "error", status.Convert(err).Message())
	default:
		return err
	}
	return nil
}

// finalize deletes a Terminating object from the store, then lets it go.
func (r *Reconciler) finalize(ctx context.Context, k key, u *unstructured.Unstructured) (time.Duration, error) {
	if !slices.Contains(u.GetFinalizers(), Finalizer) {
		r.setRetry(k, false)
		return 0, nil
	}
	ns := u.GetNamespace()
	actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	_, err := r.cfg.Admin.DeleteResourceFrom(actx, &meshv1.DeleteResourceRequest{Kind: string(k.kind), Namespace: ns, Name: u.GetName()}, store.SourceKubernetes)
	cancel()
	switch status.Code(err) {
	case codes.OK, codes.NotFound:
		// Gone from the store, or never in it (Rejected all along).
	case codes.FailedPrecondition:
		if strings.Contains(err.Error(), admin.OwnedByMeshctl) {
			break // meshctl's object of the same name: not ours to delete
		}
		r.setRetry(k, true)
		st := state{blocked: &metav1.Condition{Type: ConditionDeleteBlocked, Status: metav1.ConditionTrue, Reason: ReasonReferred, Message: status.Convert(err).Message()}}
		if cur := currentConditions(u); cur[ConditionAccepted] != nil {
			st.accepted = *cur[ConditionAccepted]
		}
		st.revision, _, _ = nestedUint(u, "status", "revision")
		return r.writeStatus(ctx, k, u, st)
	default:
		return 0, err
	}
	r.setRetry(k, false)
	if err == nil {
		r.cfg.Logger.Info("deleted a minimesh.io object from the store", "object", k.String())
	}
	keep := slices.DeleteFunc(slices.Clone(u.GetFinalizers()), func(f string) bool { return f == Finalizer })
	return 0, r.patchFinalizers(ctx, k, u, keep)
}

// patchFinalizers sets metadata.finalizers, guarded by the object's
// resourceVersion (a conflict retries with the informer's newer copy).
func (r *Reconciler) patchFinalizers(ctx context.Context, k key, u *unstructured.Unstructured, finalizers []string) error {
	if finalizers == nil {
		finalizers = []string{}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": finalizers, "resourceVersion": u.GetResourceVersion()}})
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	_, err = r.cfg.Dynamic.Resource(Resource(k.kind)).Namespace(k.namespace).Patch(actx, k.name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "meshd"})
	if err != nil {
		return fmt.Errorf("patch the finalizers of %s: %w", k, err)
	}
	return nil
}

func currentConditions(u *unstructured.Unstructured) map[string]*metav1.Condition {
	out := map[string]*metav1.Condition{}
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		var c metav1.Condition
		if b, err := json.Marshal(m); err == nil && json.Unmarshal(b, &c) == nil && c.Type != "" {
			out[c.Type] = &c
		}
	}
	return out
}

func nestedUint(u *unstructured.Unstructured, fields ...string) (uint64, bool, error) {
	v, ok, err := unstructured.NestedFieldNoCopy(u.Object, fields...)
	if !ok || err != nil {
		return 0, ok, err
	}
	switch n := v.(type) {
	case int64:
		return uint64(max(n, 0)), true, nil
	case float64:
		return uint64(max(n, 0)), true, nil
	}
	return 0, false, nil
}

// writeStatus writes the status st gives when it differs from u's: at
// once for a condition, generation or revision change, an ACK count
// alone at most once per StatusEvery (it returns when to look again).
func (r *Reconciler) writeStatus(ctx context.Context, k key, u *unstructured.Unstructured, st state) (time.Duration, error) {
	now := r.cfg.Clock.Now()
	cur := currentConditions(u)
	var conds []metav1.Condition
	for _, c := range []*metav1.Condition{&st.accepted, st.blocked} {
		if c == nil || c.Type == "" {
			continue
		}
		c.ObservedGeneration = u.GetGeneration()
		c.LastTransitionTime = metav1.NewTime(now.UTC().Truncate(time.Second))
		if old := cur[c.Type]; old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		conds = append(conds, *c)
	}
	acked := int64(0)
	if st.revision > 0 && st.accepted.Status == metav1.ConditionTrue {
		acked = r.acks.count(st.revision, now)
	}
	oldGen, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	oldRev, _, _ := nestedUint(u, "status", "revision")
	oldAcked, _, _ := unstructured.NestedInt64(u.Object, "status", "ackedProxies")
	sameConds := len(conds) == len(cur)
	for _, c := range conds {
		if o := cur[c.Type]; o == nil || o.Status != c.Status || o.Reason != c.Reason || o.Message != c.Message || o.ObservedGeneration != c.ObservedGeneration {
			sameConds = false
		}
	}
	stateSame := sameConds && oldGen == u.GetGeneration() && oldRev == st.revision
	if stateSame && oldAcked == acked {
		return 0, nil
	}
	if stateSame {
		r.mu.Lock()
		last := r.written[k]
		r.mu.Unlock()
		if wait := last.Add(r.cfg.StatusEvery).Sub(now); wait > 0 {
			return wait, nil
		}
	}
	statusDoc := map[string]any{
		"observedGeneration": u.GetGeneration(),
		"revision":           st.revision,
		"ackedProxies":       acked,
		"conditions":         conds,
	}
	patch, err := json.Marshal(map[string]any{"status": statusDoc})
	if err != nil {
		return 0, err
	}
	actx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if _, err := r.cfg.Dynamic.Resource(Resource(k.kind)).Namespace(k.namespace).Patch(actx, k.name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "meshd"}, "status"); err != nil {
		return 0, fmt.Errorf("write the status of %s: %w", k, err)
	}
	r.mu.Lock()
	r.written[k] = now
	r.mu.Unlock()
	return 0, nil
}

// ackCache counts, from the push server's sync state (read at most once a
// second), the connected proxies whose applied snapshot was computed at a
// revision at or after rev: the rule of meshctl apply --wait.
type ackCache struct {
	sync  func() ([]*meshv1.ProxySync, error)
	mu    sync.Mutex
	at    time.Time
	state []*meshv1.ProxySync
}

func (a *ackCache) count(rev uint64, now time.Time) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.at) >= time.Second || now.Before(a.at) {
		if s, err := a.sync(); err == nil {
			a.state, a.at = s, now
		}
	}
	return AckedAt(a.state, rev)
}

// AckedAt counts the proxies of ps that are connected, not revoked, and
// ACKed the snapshot meshd computes for them now, computed at rev or
// later.
func AckedAt(ps []*meshv1.ProxySync, rev uint64) int64 {
	n := int64(0)
	for _, p := range ps {
		if !p.GetProxy().GetConnected() || p.GetProxy().GetRevoked() {
			continue
		}
		if p.GetRevision() >= rev && p.GetCurrentVersion() != "" && p.GetAckedVersion() == p.GetCurrentVersion() {
			n++
		}
	}
	return n
}
