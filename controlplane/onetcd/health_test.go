package onetcd_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/store/storetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestReadyWhileEtcdIsDown: a replica cut off from etcd still serves from
// its cache (renewals, pushes), so it stays ready: grpc.health.v1 says
// SERVING and /readyz 200 while its writes are refused naming etcd. A
// kubelet must not take every replica out of the Service because etcd is.
func TestReadyWhileEtcdIsDown(t *testing.T) {
	ec := testEtcd(t)
	rl := storetest.NewRelay(t, etcdSrv.Endpoints[0])
	ec.Endpoints = []string{"http://" + rl.Addr()}
	ec.RequestTimeout = time.Second
	ec.DialTimeout = 2 * time.Second
	keyFile, _ := writeCAKey(t)
	m := controlplanetest.Start(t, controlplane.Config{Etcd: ec, CAKeyFile: keyFile})
	op := m.Operator(t)
	hc := healthpb.NewHealthClient(m.DialAnonymous(t))
	readyz := httptest.NewServer(m.HealthHandler())
	defer readyz.Close()
	check := func(when string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for m.Ready() != nil && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if err := m.Ready(); err != nil {
			t.Fatalf("%s: Ready: %v", when, err)
		}
		resp, err := hc.Check(ctx(t), &healthpb.HealthCheckRequest{})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s: Check: %v %v, want SERVING", when, resp.GetStatus(), err)
		}
		r, err := readyz.Client().Get(readyz.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusOK {
			t.Errorf("%s: /readyz %d, want 200", when, r.StatusCode)
		}
	}
	check("etcd up")

	rl.Cut(true)
	_, err := op.CreateJoinToken(ctx(t), &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "web"})
	wantEtcdUnavailable(t, "CreateJoinToken", err)
	check("etcd down")
	rl.Cut(false)
}
