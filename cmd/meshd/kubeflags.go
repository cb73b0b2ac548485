package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/pflag"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"minimesh/controlplane"
	"minimesh/controlplane/kube"
)

// kubeOptions are meshd's Kubernetes API flags (controlplane/kube).
type kubeOptions struct {
	s         kube.Settings
	watchCRDs bool
}

func (o *kubeOptions) register(fs *pflag.FlagSet) {
	fs.StringVar(&o.s.Mode, "kube-api", kube.ModeAuto, "Kubernetes API access, to review pods' service-account tokens: auto (--kubeconfig if given, else the pod's ServiceAccount when meshd runs in a pod, else none) or off; without access only join tokens bootstrap proxies")
	fs.StringVar(&o.s.Kubeconfig, "kubeconfig", "", "kubeconfig file (its current context) for the Kubernetes API when meshd runs outside the cluster")
	fs.BoolVar(&o.watchCRDs, "watch-crds", true, "with Kubernetes API access, apply the minimesh.io objects (deploy/k8s/crds) as meshctl apply would; the leader writes their status")
}

// apply gets the API access the flags give and sets cfg.TokenReviewer; the
// client is returned for the other users of the API (nil: none).
func (o *kubeOptions) apply(cfg *controlplane.Config, log *slog.Logger) (kubernetes.Interface, error) {
	client, source, err := kube.NewClient(o.s)
	if err != nil {
		return nil, err
	}
	if client == nil {
		log.Info("no Kubernetes API access: only join tokens bootstrap proxies", "kube_api", o.s.Mode)
		return nil, nil
	}
	cfg.TokenReviewer = kube.NewTokenReviewer(client, kube.ReviewerOptions{Timeout: o.s.Timeout})
	log.Info("Kubernetes API access: pods' service-account tokens are reviewed (TokenReview, audience "+kube.Audience+")", "via", source)
	if o.watchCRDs {
		rc, _, err := kube.RESTConfig(o.s)
		if err != nil {
			return nil, err
		}
		// Informers hold watches open: no client-wide timeout (each
		// call the reconciler makes has its own).
		rc.Timeout = 0
		if cfg.CRD.Dynamic, err = dynamic.NewForConfig(rc); err != nil {
			return nil, fmt.Errorf("kube: dynamic client for %s: %w", source, err)
		}
		log.Info("Kubernetes API access: the minimesh.io objects are applied (--watch-crds)")
	}
	return client, nil
}
