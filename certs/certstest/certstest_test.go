package certstest_test

import (
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/certs"
	"minimesh/certs/certstest"
)

func TestNewCAAndSVID(t *testing.T) {
	ca := certstest.NewCA(t, "example.org")
	if ca.TrustDomain().Name() != "example.org" {
		t.Fatalf("trust domain %s", ca.TrustDomain())
	}
	svid := certstest.SVID(t, ca, "spiffe://example.org/ns/shop/sa/web")
	id, _, err := x509svid.Verify(svid.Certificates, ca.Bundle())
	if err != nil || id.String() != "spiffe://example.org/ns/shop/sa/web" {
		t.Fatalf("Verify = %v, %v", id, err)
	}
	if got := svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore); got != certs.DefaultSVIDTTL+certs.DefaultBackdate {
		t.Errorf("lifetime %v", got)
	}
}

func TestClock(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := certstest.NewClock(start)
	if !c.Now().Equal(start) {
		t.Fatal("Now != start")
	}
	if got := c.Add(time.Hour); !got.Equal(start.Add(time.Hour)) || !c.Now().Equal(got) {
		t.Fatalf("Add = %v", got)
	}
	c.Set(start)
	if !c.Now().Equal(start) {
		t.Fatal("Set")
	}

	var zero certstest.Clock
	first := zero.Now()
	if first.IsZero() || !zero.Now().Equal(first) {
		t.Fatal("zero Clock is not frozen at a real time")
	}

	// Safe for concurrent use (run with -race).
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c.Add(time.Second)
			_ = c.Now()
		})
	}
	wg.Wait()
	if got := c.Now(); !got.Equal(start.Add(8 * time.Second)) {
		t.Fatalf("after concurrent Adds %v", got)
	}
	var _ certs.Clock = c
}
