package onetcd_test

import (
	"strings"
	"testing"
	"time"

	"minimesh/controlplane"
)

// TestLeaseTTLFlag: --lease-ttl becomes the store's session TTL in whole
// seconds; 0 leaves the store's default; anything else is refused naming
// the flag.
func TestLeaseTTLFlag(t *testing.T) {
	ec, err := (controlplane.EtcdStoreFlags{Store: "etcd://127.0.0.1:2379", LeaseTTL: 2 * time.Second}).EtcdConfig()
	if err != nil || ec.SessionTTL != 2 {
		t.Fatalf("--lease-ttl 2s: %+v %v, want SessionTTL 2", ec, err)
	}
	if ec, err := (controlplane.EtcdStoreFlags{Store: "etcd://127.0.0.1:2379"}).EtcdConfig(); err != nil || ec.SessionTTL != 0 {
		t.Fatalf("no --lease-ttl: %+v %v, want SessionTTL 0 (the store's default)", ec, err)
	}
	for _, bad := range []time.Duration{time.Second, 2500 * time.Millisecond, -time.Second, 2 * time.Hour} {
		_, err := (controlplane.EtcdStoreFlags{Store: "etcd://127.0.0.1:2379", LeaseTTL: bad}).EtcdConfig()
		if err == nil || !strings.Contains(err.Error(), "--lease-ttl") {
			t.Errorf("--lease-ttl %s: %v, want a refusal naming --lease-ttl", bad, err)
		}
	}
}
