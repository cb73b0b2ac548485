package admin

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestLivezAndReadyz: /livez and /readyz, the names meshd and Kubernetes
// use, answer as /healthz and /ready do.
func TestLivezAndReadyz(t *testing.T) {
	var ready atomic.Bool
	_, url, c := start(t, Config{Ready: func() error {
		if !ready.Load() {
			return errors.New("no SVID yet")
		}
		return nil
	}})
	if code, body := fetch(t, c, http.MethodGet, url+"/livez"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/livez: %d %q, want 200 ok", code, body)
	}
	if code, body := fetch(t, c, http.MethodGet, url+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no SVID yet") {
		t.Errorf("/readyz not ready: %d %q, want 503 and the reason", code, body)
	}
	ready.Store(true)
	if code, body := fetch(t, c, http.MethodGet, url+"/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz ready: %d %q, want 200 ready", code, body)
	}
}
