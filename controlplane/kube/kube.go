// Package kube is how meshd reaches the Kubernetes API, and the one thing
// it asks it for identity: a TokenReview of a pod's projected
// service-account token.
//
// API access (Settings): with --kube-api auto (the default), a --kubeconfig
// FILE when given, else the in-cluster config (the pod's ServiceAccount,
// client-go's rest.InClusterConfig) when meshd runs in a pod, else none;
// with --kube-api off, none. Without access only join tokens work.
//
// A TokenReviewer reviews a token with spec.audiences [minimesh] and
// returns the identity the API server's answer (its status) names: the
// service account from status.user.username and the pod from
// status.user.extra. Nothing is read from the token itself: meshd never
// parses the JWT.
package kube

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Modes of Settings.Mode (--kube-api).
const (
	ModeAuto = "auto"
	ModeOff  = "off"
)

// DefaultTimeout bounds each call to the Kubernetes API.
const DefaultTimeout = 5 * time.Second

// Settings say how meshd gets Kubernetes API access.
type Settings struct {
	// Mode is ModeAuto (default when empty) or ModeOff.
	Mode string
	// Kubeconfig is a kubeconfig file (its current context is used). In
	// auto mode it wins over the in-cluster config.
	Kubeconfig string
	// Timeout bounds each API call (default DefaultTimeout).
	Timeout time.Duration
}

// Validate checks the settings' fields (not the files they name).
func (s Settings) Validate() error {
	switch s.Mode {
	case "", ModeAuto:
	case ModeOff:
		if s.Kubeconfig != "" {
			return errors.New("kube: --kubeconfig with --kube-api off: remove one (off means meshd never calls the Kubernetes API)")
		}
	default:
		return fmt.Errorf("kube: --kube-api: want %q or %q, got %q", ModeAuto, ModeOff, s.Mode)
	}
	if s.Timeout < 0 {
		return fmt.Errorf("kube: timeout: must not be negative, got %s", s.Timeout)
	}
	return nil
}

// inClusterConfig is rest.InClusterConfig (a variable for tests).
var inClusterConfig = rest.InClusterConfig

// RESTConfig is the API access the settings give: a config and where it
// came from ("kubeconfig FILE" or "in-cluster"), or nil and "" when there
// is none (mode off, or auto outside a pod without --kubeconfig). An
// unreadable kubeconfig, or a pod whose in-cluster config is broken (its
// token or CA file missing), is an error: meshd does not fall back
// silently to join tokens only.
func RESTConfig(s Settings) (*rest.Config, string, error) {
	if err := s.Validate(); err != nil {
		return nil, "", err
	}
	if s.Mode == ModeOff {
		return nil, "", nil
	}
	var (
		cfg    *rest.Config
		source string
		err    error
	)
	if s.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
		if err != nil {
			return nil, "", fmt.Errorf("kube: --kubeconfig %s: %w", s.Kubeconfig, err)
		}
		source = "kubeconfig " + s.Kubeconfig
	} else {
		cfg, err = inClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, "", nil
		}
		if err != nil {
			return nil, "", fmt.Errorf("kube: in-cluster config (meshd runs in a pod but cannot use its ServiceAccount; give --kubeconfig or --kube-api off): %w", err)
		}
		source = "in-cluster"
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = s.Timeout
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	cfg.UserAgent = "meshd"
	return cfg, source, nil
}

// NewClient is a clientset for the settings' API access, or nil, "" when
// there is none (see RESTConfig).
func NewClient(s Settings) (kubernetes.Interface, string, error) {
	cfg, source, err := RESTConfig(s)
	if err != nil || cfg == nil {
		return nil, "", err
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("kube: client for %s: %w", source, err)
	}
	return c, source, nil
}
