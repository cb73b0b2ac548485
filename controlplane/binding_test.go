package controlplane_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/identity"
	meshv1 "minimesh/proto/mesh/v1"
)

// bootstrapAs gets an SVID for default/sa through a fresh token, bound to instance.
func bootstrapAs(t *testing.T, m *controlplanetest.Meshd, sa, instance string) (*x509svid.SVID, error) {
	t.Helper()
	tok := m.Token(t, "default", sa, 1)
	id := spiffeid.RequireFromString(fmt.Sprintf("spiffe://%s/ns/default/sa/%s", td, sa))
	key, csr := csrFor(t, id.String())
	resp, err := meshv1.NewIdentityServiceClient(m.DialAnonymous(t)).Bootstrap(ctx(t), &meshv1.BootstrapRequest{Token: tok.Secret, Csr: csr, InstanceId: instance})
	if err != nil {
		return nil, err
	}
	chain, err := certs.ParseCertsDER(resp.Svid.CertChain)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

func renewAs(t *testing.T, m *controlplanetest.Meshd, svid *x509svid.SVID, claimed string) (*meshv1.RenewResponse, error) {
	t.Helper()
	_, csr := csrFor(t, svid.ID.String())
	return meshv1.NewIdentityServiceClient(m.DialAs(t, svid)).Renew(ctx(t), &meshv1.RenewRequest{Csr: csr, InstanceId: claimed})
}

// register opens a registration stream as svid and waits for Registered, so
// that meshd has a proxy record to revoke.
func register(t *testing.T, m *controlplanetest.Meshd, svid *x509svid.SVID, instance string) {
	t.Helper()
	stream, err := meshv1.NewConfigServiceClient(m.DialAs(t, svid)).Stream(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: &meshv1.Hello{InstanceId: instance, Service: "web", AdvertiseAddress: "127.0.0.1:1"}}}); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("registration stream: %v", err)
		}
		if msg.GetRegistered() != nil {
			return
		}
	}
}

func TestRevokedProxyCannotRenewUnderAnotherInstance(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	web, err := bootstrapAs(t, m, "web", "web-a")
	if err != nil {
		t.Fatal(err)
	}
	if got := certs.InstanceID(web.Certificates[0]); got != "web-a" {
		t.Fatalf("bootstrapped SVID bound to %q, want web-a", got)
	}
	// Claiming another instance is refused; the renewed SVID keeps web-a.
	if _, err := renewAs(t, m, web, "web-b"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("renew as web-a claiming web-b: %v, want InvalidArgument", err)
	}
	r, err := renewAs(t, m, web, "")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := certs.ParseCertsDER(r.Svid.CertChain)
	if err != nil {
		t.Fatal(err)
	}
	if got := certs.InstanceID(leaf[0]); got != "web-a" {
		t.Fatalf("renewed SVID bound to %q, want web-a", got)
	}

	register(t, m, web, "web-a")
	if _, err := m.Operator(t).RevokeProxy(ctx(t), &meshv1.RevokeProxyRequest{InstanceId: "web-a"}); err != nil {
		t.Fatal(err)
	}
	before := counterSum(t, m, "minimesh_meshd_identity_refused_total")
	for _, claimed := range []string{"web-new", "", "web-a"} {
		if _, err := renewAs(t, m, web, claimed); err == nil {
			t.Errorf("the revoked proxy's certificate renewed claiming %q", claimed)
		} else if c := status.Code(err); c != codes.PermissionDenied && c != codes.InvalidArgument {
			t.Errorf("renew claiming %q: %v", claimed, err)
		}
	}
	if _, err := renewAs(t, m, web, ""); status.Code(err) != codes.PermissionDenied {
		t.Errorf("renew of a revoked instance: %v, want PermissionDenied", err)
	}
	if _, err := bootstrapAs(t, m, "web", "web-a"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("bootstrap as the revoked instance: %v, want PermissionDenied", err)
	}
	if after := counterSum(t, m, "minimesh_meshd_identity_refused_total"); after < before+5 {
		t.Errorf("refusals counted %v -> %v, want 5 more", before, after)
	}
}

func TestRenewInALoopIsRefusedWithARetryDelay(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	web, err := bootstrapAs(t, m, "web", "web-a")
	if err != nil {
		t.Fatal(err)
	}
	var last error
	for i := 0; i < 2*identity.DefaultInstanceBurst && last == nil; i++ {
		_, last = renewAs(t, m, web, "")
	}
	if status.Code(last) != codes.ResourceExhausted {
		t.Fatalf("renewing in a loop: %v, want ResourceExhausted", last)
	}
	d, ok := identity.RetryDelay(last)
	if !ok || d <= 0 || d > identity.DefaultInstanceEvery {
		t.Fatalf("retry delay %v (%v), want one in (0, %s]", d, ok, identity.DefaultInstanceEvery)
	}
	if n := m.Counter(t, "minimesh_meshd_identity_refused_total", "reason", "rate_limited"); n < 1 {
		t.Fatalf("rate-limited refusals counted: %v", n)
	}
}

func TestRunLoopPrunesExpiredCertificateRecords(t *testing.T) {
	clock := certstest.NewClock(time.Now())
	m := controlplanetest.Start(t, controlplane.Config{Clock: clock, RotationCheck: 10 * time.Millisecond})
	web, err := bootstrapAs(t, m, "web", "web-a")
	if err != nil {
		t.Fatal(err)
	}
	serial := web.Certificates[0].SerialNumber.Text(16)
	has := func() bool {
		cs, err := m.Operator(t).ListCertificates(ctx(t), &meshv1.ListCertificatesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs.Certificates {
			if c.Serial == serial {
				return true
			}
		}
		return false
	}
	if !has() {
		t.Fatal("the new certificate is not recorded")
	}
	clock.Add(2 * time.Hour)
	deadline := time.Now().Add(15 * time.Second)
	for has() {
		if time.Now().After(deadline) {
			t.Fatal("the expired certificate's record was not pruned")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
