package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"minimesh/controlplane"
)

// opSecretOptions is meshd's --operator-secret flag (controlplane/opsecret.go).
type opSecretOptions struct {
	secret string
}

func (o *opSecretOptions) register(fs *pflag.FlagSet) {
	fs.StringVar(&o.secret, "operator-secret", controlplane.DefaultOperatorSecretNamespace+"/"+controlplane.DefaultOperatorSecretName,
		"with Kubernetes API access, NAMESPACE/NAME of the Secret (created empty by deploy/k8s/base) into which the leader writes an operator credential for meshctl in the cluster (svid.pem, svid_key.pem, bundle.pem), renewed at half its life and after a root rotation; off when empty")
}

// apply checks the flag and, with API access (client), turns the Secret on.
func (o *opSecretOptions) apply(cfg *controlplane.Config, client kubernetes.Interface, log *slog.Logger) error {
	if o.secret == "" {
		return nil
	}
	ns, name, ok := strings.Cut(o.secret, "/")
	if !ok || strings.Contains(name, "/") {
		return fmt.Errorf("--operator-secret %q: want NAMESPACE/NAME (or empty for off)", o.secret)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return fmt.Errorf("--operator-secret %q: namespace: %s", o.secret, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("--operator-secret %q: name: %s", o.secret, strings.Join(errs, "; "))
	}
	if client == nil {
		return nil // no API access: nothing to write into
	}
	cfg.OperatorSecret = controlplane.OperatorSecretConfig{Kube: client, Namespace: ns, Name: name}
	log.Info("the operator credential is kept in a Kubernetes Secret", "secret", o.secret)
	return nil
}
