package onetcd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/store/storetest"
	meshv1 "minimesh/proto/mesh/v1"
)

func gauge(t *testing.T, m *controlplanetest.Meshd, name string) float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s is not exported", name)
	return 0
}

// wantEtcdUnavailable: the call was refused with Unavailable naming etcd.
func wantEtcdUnavailable(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "etcd unreachable") {
		t.Fatalf("%s with etcd unreachable: %v, want Unavailable naming etcd", what, err)
	}
}

// TestRenewWhileEtcdIsDown: a meshd cut off from etcd still renews a
// proxy's SVID (checked against its cache) and queues the certificate
// record; writes (Bootstrap, Apply, CreateJoinToken, RevokeProxy) are
// refused with Unavailable naming etcd; when etcd is back the record is
// written and the queue is empty.
func TestRenewWhileEtcdIsDown(t *testing.T) {
	ec := testEtcd(t)
	rl := storetest.NewRelay(t, etcdSrv.Endpoints[0])
	ec.Endpoints = []string{"http://" + rl.Addr()}
	ec.RequestTimeout = time.Second
	ec.DialTimeout = 2 * time.Second
	keyFile, _ := writeCAKey(t)
	m := controlplanetest.Start(t, controlplane.Config{Etcd: ec, CAKeyFile: keyFile})
	svid := bootstrap(t, m, "default", "web")
	tok := m.Token(t, "default", "api", 1) // for a Bootstrap while cut off
	op := m.Operator(t)
	ids := meshv1.NewIdentityServiceClient(m.DialAs(t, svid))
	anon := meshv1.NewIdentityServiceClient(m.DialAnonymous(t))

	rl.Cut(true)
	start := time.Now()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, svid.ID)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ids.Renew(ctx(t), &meshv1.RenewRequest{Csr: csr})
	if err != nil {
		t.Fatalf("Renew with etcd unreachable: %v", err)
	}
	chain, err := certs.ParseCertsDER(resp.GetSvid().GetCertChain())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := certs.VerifyPeerCertificates(chain, m.CA().Bundle(), time.Now()); err != nil {
		t.Fatalf("the SVID renewed while etcd was down does not verify: %v", err)
	}
	renewed := serial(chain[0])
	if renewed == serial(svid.Certificates[0]) || certs.InstanceID(chain[0]) != "i-web" {
		t.Fatalf("renewed SVID: serial %s, instance %q", renewed, certs.InstanceID(chain[0]))
	}
	if q := gauge(t, m, "minimesh_meshd_renew_records_queued"); q < 1 {
		t.Fatalf("minimesh_meshd_renew_records_queued = %v after a Renew with etcd down", q)
	}
	// A second Renew queues behind the first without waiting on etcd.
	csr2, _ := certs.NewCSR(key, svid.ID)
	if _, err := ids.Renew(ctx(t), &meshv1.RenewRequest{Csr: csr2}); err != nil {
		t.Fatalf("second Renew with etcd unreachable: %v", err)
	}
	t.Logf("two renewals with etcd unreachable in %s", time.Since(start).Round(time.Millisecond))

	// Writes are refused, naming etcd.
	key3, _ := certs.GenerateKey()
	csr3, err := certs.NewCSR(key3, spiffeid.RequireFromString("spiffe://"+td+"/ns/default/sa/api"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.Bootstrap(ctx(t), &meshv1.BootstrapRequest{Token: tok.GetSecret(), Csr: csr3, InstanceId: "i-api"})
	wantEtcdUnavailable(t, "Bootstrap", err)
	_, err = op.Apply(ctx(t), &meshv1.ApplyRequest{Resources: []*meshv1.Resource{serviceResource("web")}})
	wantEtcdUnavailable(t, "Apply", err)
	_, err = op.CreateJoinToken(ctx(t), &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "db"})
	wantEtcdUnavailable(t, "CreateJoinToken", err)
	_, err = op.DenyIdentity(ctx(t), &meshv1.DenyIdentityRequest{SpiffeId: "spiffe://" + td + "/ns/default/sa/db"})
	wantEtcdUnavailable(t, "DenyIdentity", err)
	// A proxy stream cannot register (its record is a write).
	stream, err := meshv1.NewConfigServiceClient(m.DialAs(t, svid)).Stream(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: &meshv1.Hello{InstanceId: "i-web", Service: "web", AdvertiseAddress: "127.0.0.1:1"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantEtcdUnavailable(t, "a proxy's registration", err)
	if n := m.Counter(t, "minimesh_meshd_admin_refused_total", "code", "Unavailable"); n < 3 {
		t.Fatalf("admin refusals counted as Unavailable: %v, want at least 3", n)
	}

	rl.Cut(false)
	back := time.Now()
	eventually(t, "the queued renewal records are written to etcd", func() bool {
		list, err := op.ListCertificates(ctx(t), &meshv1.ListCertificatesRequest{})
		if err != nil {
			return false
		}
		for _, c := range list.GetCertificates() {
			if c.GetSerial() == renewed {
				return gauge(t, m, "minimesh_meshd_renew_records_queued") == 0
			}
		}
		return false
	})
	t.Logf("queued records written %s after etcd came back", time.Since(back).Round(time.Millisecond))
	// Writes work again.
	if _, err := op.Apply(ctx(t), &meshv1.ApplyRequest{Resources: []*meshv1.Resource{serviceResource("web")}}); err != nil {
		t.Fatalf("Apply after etcd came back: %v", err)
	}
}

// TestRenewAnswersWithinACallWhileEtcdIsDown: with etcd's RequestTimeout
// far longer than a proxy's call timeout (10 s, the agent's default), a
// Renew while etcd is unreachable still answers within that call: its
// record write gives up after identity.RecordWait and is queued. Before,
// the first Renew on each replica waited for the whole RequestTimeout (and
// behind the replica's other writes), so the proxy's call timed out while
// meshd went on to issue an SVID nobody received.
func TestRenewAnswersWithinACallWhileEtcdIsDown(t *testing.T) {
	ec := testEtcd(t)
	rl := storetest.NewRelay(t, etcdSrv.Endpoints[0])
	ec.Endpoints = []string{"http://" + rl.Addr()}
	ec.RequestTimeout = 2 * time.Minute
	ec.DialTimeout = 2 * time.Second
	keyFile, _ := writeCAKey(t)
	m := controlplanetest.Start(t, controlplane.Config{Etcd: ec, CAKeyFile: keyFile})
	svid := bootstrap(t, m, "default", "web")
	ids := meshv1.NewIdentityServiceClient(m.DialAs(t, svid))

	rl.Cut(true)
	t.Cleanup(func() { rl.Cut(false) }) // so meshd's shutdown does not wait on etcd
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := certs.NewCSR(key, svid.ID)
	if err != nil {
		t.Fatal(err)
	}
	call, cancel := context.WithTimeout(context.Background(), 10*time.Second) // the agent's CallTimeout
	defer cancel()
	start := time.Now()
	resp, err := ids.Renew(call, &meshv1.RenewRequest{Csr: csr})
	if err != nil {
		t.Fatalf("Renew with etcd unreachable (RequestTimeout %s), within a proxy's 10 s call: %v", ec.RequestTimeout, err)
	}
	t.Logf("Renew answered in %s with etcd unreachable", time.Since(start).Round(time.Millisecond))
	chain, err := certs.ParseCertsDER(resp.GetSvid().GetCertChain())
	if err != nil || serial(chain[0]) == serial(svid.Certificates[0]) {
		t.Fatalf("renewed chain: %v", err)
	}
	if q := gauge(t, m, "minimesh_meshd_renew_records_queued"); q < 1 {
		t.Fatalf("minimesh_meshd_renew_records_queued = %v after a Renew with etcd down", q)
	}
}
