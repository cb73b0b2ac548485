package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"minimesh/controlplane"
	"minimesh/controlplane/kube"
	"minimesh/controlplane/webhook"
	"minimesh/internal/version"
)

// webhookOptions are meshd's --webhook-* flags (controlplane/webhook).
type webhookOptions struct {
	cfg controlplane.WebhookConfig
}

func (o *webhookOptions) register(fs *pflag.FlagSet) {
	fs.StringVar(&o.cfg.Listen, "webhook-listen", "", "serve the mutating admission webhook that injects mesh-proxy (TLS, "+webhook.Path+") on this address, e.g. 0.0.0.0:15017; off when empty")
	fs.StringSliceVar(&o.cfg.DNSNames, "webhook-dns-names", webhook.DefaultDNSNames, "DNS names of the webhook's certificate: the Service the API server calls")
	fs.StringVar(&o.cfg.ConfigurationName, "webhook-configuration", webhook.DefaultConfigurationName, "the MutatingWebhookConfiguration whose caBundle meshd keeps equal to its roots (with Kubernetes API access)")
	fs.StringVar(&o.cfg.Image, "webhook-image", "", `mesh-proxy's image in injected pods (default "minimesh/minimesh:`+version.Version+`")`)
	fs.StringVar(&o.cfg.ControlPlane, "webhook-control-plane", "", `meshd's address in injected pods (default "meshd.minimesh-system.svc:15010")`)
}

// apply checks the flags and sets cfg.Webhook; client keeps the
// configuration's caBundle current (nil: meshd's own in-cluster access,
// if it runs in a pod; without any, the caBundle is left to the operator).
func (o *webhookOptions) apply(cfg *controlplane.Config, client kubernetes.Interface) error {
	w := o.cfg
	if w.Listen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(w.Listen); err != nil {
		return fmt.Errorf("--webhook-listen %q: %w", w.Listen, err)
	}
	for _, n := range w.DNSNames {
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			return fmt.Errorf("--webhook-dns-names %q: %s", n, strings.Join(errs, "; "))
		}
	}
	if errs := validation.IsDNS1123Subdomain(w.ConfigurationName); len(errs) > 0 {
		return fmt.Errorf("--webhook-configuration %q: %s", w.ConfigurationName, strings.Join(errs, "; "))
	}
	if client == nil {
		var err error
		if client, _, err = kube.NewClient(kube.Settings{}); err != nil {
			return fmt.Errorf("--webhook-listen: %w", err)
		}
	}
	w.Kube = client
	cfg.Webhook = w
	return nil
}
