package agent

import (
	"context"
	"testing"
	"time"
)

// refresh runs one renewal or bootstrap, as the identity loop does.
func refresh(a *Agent) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return a.refresh(ctx)
}

// Refresh is refresh for the external tests.
var Refresh = refresh

// RenewOnce renews and fails the test on an error.
func RenewOnce(t *testing.T, a *Agent) {
	t.Helper()
	if err := refresh(a); err != nil {
		t.Fatalf("renew: %v", err)
	}
}
