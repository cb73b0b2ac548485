package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// APITimeout bounds each call to the Kubernetes API.
const APITimeout = 10 * time.Second

// caBundle keeps every webhook of one MutatingWebhookConfiguration
// trusting meshd's roots: it reads the configuration (get) and, when a
// caBundle differs, patches it (patch), by name: the RBAC rule allows
// those two verbs on that one resourceName and nothing else.
type caBundle struct {
	kube kubernetes.Interface
	name string
	// validating, when set, is a ValidatingWebhookConfiguration (the
	// minimesh.io objects' /validate) kept the same way.
	validating string
	log        *slog.Logger
	results    *prometheus.CounterVec

	last    []byte    // the roots the configuration was last seen to hold
	checked time.Time // when
	retryAt time.Time // after a failure
	backoff time.Duration
}

func newCABundle(kube kubernetes.Interface, name, validating string, log *slog.Logger, reg prometheus.Registerer) (*caBundle, error) {
	b := &caBundle{kube: kube, name: name, validating: validating, log: log.With("configuration", name), results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minimesh_meshd_webhook_ca_bundle_syncs_total",
		Help: "Reads of the webhook configuration's caBundle by result: current, patched, or error (the Kubernetes API unreachable, the configuration missing, RBAC).",
	}, []string{"result"})}
	for _, r := range []string{"current", "patched", "error"} {
		b.results.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(b.results); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// sync brings the configuration's caBundles to want when the roots changed
// since it last looked, or resync has passed; after a failure it waits
// (1 s doubling to 1 min) before it asks the API again.
func (b *caBundle) sync(ctx context.Context, want []byte, resync time.Duration, now time.Time) {
	if bytes.Equal(want, b.last) && now.Sub(b.checked) < resync || now.Before(b.retryAt) {
		return
	}
	patched, err := b.apply(ctx, want)
	if err != nil {
		b.results.WithLabelValues("error").Inc()
		b.backoff = min(max(2*b.backoff, time.Second), time.Minute)
		b.retryAt = now.Add(b.backoff)
		b.last = nil
		b.log.Error("could not keep the webhook configuration's caBundle current: the API server may not trust the webhook's certificate after a root rotation", "error", err, "retry_in", b.backoff)
		return
	}
	b.last, b.checked, b.backoff, b.retryAt = want, now, 0, time.Time{}
	if patched > 0 {
		b.results.WithLabelValues("patched").Inc()
		b.log.Info("updated the webhook configuration's caBundle", "webhooks", patched)
	} else {
		b.results.WithLabelValues("current").Inc()
	}
}

type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// apply patches every webhook whose caBundle is not want; each change is
// preceded by a test of that webhook's name, so a configuration changed
// meanwhile (a webhook removed or reordered) fails the patch instead of
// setting another webhook's caBundle.
func (b *caBundle) apply(ctx context.Context, want []byte) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	api := b.kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, b.name, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("get MutatingWebhookConfiguration %s from the Kubernetes API: %w", b.name, err)
	}
	var ops []patchOp
	for i, wh := range cfg.Webhooks {
		ops = bundleOps(ops, i, wh.Name, wh.ClientConfig.CABundle, want)
	}
	n := len(ops) / 2
	if len(ops) > 0 {
		patch, err := json.Marshal(ops)
		if err != nil {
			return 0, err
		}
		if _, err := api.Patch(ctx, b.name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "meshd"}); err != nil {
			return 0, fmt.Errorf("patch MutatingWebhookConfiguration %s through the Kubernetes API: %w", b.name, err)
		}
	}
	if b.validating == "" {
		return n, nil
	}
	vapi := b.kube.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	vcfg, err := vapi.Get(ctx, b.validating, metav1.GetOptions{})
	if err != nil {
		return n, fmt.Errorf("get ValidatingWebhookConfiguration %s from the Kubernetes API: %w", b.validating, err)
	}
	ops = nil
	for i, wh := range vcfg.Webhooks {
		ops = bundleOps(ops, i, wh.Name, wh.ClientConfig.CABundle, want)
	}
	if len(ops) == 0 {
		return n, nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return n, err
	}
	if _, err := vapi.Patch(ctx, b.validating, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "meshd"}); err != nil {
		return n, fmt.Errorf("patch ValidatingWebhookConfiguration %s through the Kubernetes API: %w", b.validating, err)
	}
	return n + len(ops)/2, nil
}

// bundleOps adds the test-and-set of webhook i's caBundle when it is not
// want.
func bundleOps(ops []patchOp, i int, name string, have, want []byte) []patchOp {
	if bytes.Equal(have, want) {
		return ops
	}
	at := "/webhooks/" + strconv.Itoa(i)
	return append(ops, patchOp{"test", at + "/name", name}, patchOp{"add", at + "/clientConfig/caBundle", want})
}
