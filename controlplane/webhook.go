package controlplane

import (
	"fmt"
	"net"
	"time"

	"k8s.io/client-go/kubernetes"

	"minimesh/certs"
	"minimesh/controlplane/webhook"
	"minimesh/internal/inject"
)

// WebhookConfig turns on the mutating admission webhook (controlplane/
// webhook): off unless Listen or Listener is set.
type WebhookConfig struct {
	// Listen is its TLS address (meshd --webhook-listen, e.g. :15017);
	// Listener, when set, is used instead.
	Listen   string
	Listener net.Listener
	// DNSNames of its serving certificate (default
	// meshd.minimesh-system.svc).
	DNSNames []string
	// ConfigurationName is the MutatingWebhookConfiguration whose caBundle
	// the leader keeps equal to the CA's roots through Kube; with Kube nil
	// the caBundle is not maintained (meshd has no API access).
	ConfigurationName string
	Kube              kubernetes.Interface
	// Image and ControlPlane are inject's --image and --control-plane for
	// the pods it injects (defaults as meshctl inject's).
	Image, ControlPlane string
	// CertTTL, Check and Resync: see webhook.Config.
	CertTTL, Check, Resync time.Duration
}

func (c WebhookConfig) enabled() bool { return c.Listen != "" || c.Listener != nil }

// injectOptions are what the webhook injects with: the pins of every root
// of the bundle in force, so a proxy bootstrapping during a rotation
// trusts meshd whichever root its certificate chains to.
func (s *Server) injectOptions() inject.Options {
	w := s.cfg.Webhook
	var pins []string
	for _, r := range s.ca.get().Bundle().X509Authorities() {
		pins = append(pins, certs.SPKIPin(r))
	}
	return inject.Options{Image: w.Image, ControlPlane: w.ControlPlane, TrustDomain: s.td.Name(), CAPins: pins}
}

// newWebhook listens and builds the webhook server.
func (s *Server) newWebhook() (*webhook.Server, error) {
	w := s.cfg.Webhook
	lis := w.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", w.Listen); err != nil {
			return nil, fmt.Errorf("controlplane: webhook listen: %w", err)
		}
	}
	wh, err := webhook.New(webhook.Config{
		Listener:          lis,
		DNSNames:          w.DNSNames,
		CertTTL:           w.CertTTL,
		CA:                s.ca.get,
		Options:           s.injectOptions,
		Kube:              w.Kube,
		ConfigurationName: w.ConfigurationName,
		IsLeader:          s.store.IsLeader,
		Validate:          s.validateFunc(),
		Check:             w.Check,
		Resync:            w.Resync,
		Clock:             s.cfg.Clock,
		Logger:            s.cfg.Logger.With("component", "webhook"),
		Registerer:        s.cfg.Registry,
	})
	if err != nil {
		_ = lis.Close()
		return nil, err
	}
	return wh, nil
}
