package onetcd_test

import (
	"context"
	"testing"
	"time"

	"minimesh/certs"
	meshv1 "minimesh/proto/mesh/v1"
)

// A proxy streaming to one replica, forgotten with force through the
// other: its stream ends too (a live proxy registers again, as on one
// meshd), and nothing brings the forgotten record back.
func TestForgetForceEndsAStreamOnAnotherReplica(t *testing.T) {
	ms := startReplicas(t)
	svid := bootstrap(t, ms[1], "default", "api")
	id := certs.InstanceID(svid.Certificates[0])
	sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, _ := register(sctx, t, ms[1], svid, "api")
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				ended <- err
				return
			}
		}
	}()
	op := ms[0].Operator(t)
	listed := func() bool {
		l, err := op.ListProxies(ctx(t), &meshv1.ListProxiesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range l.GetProxies() {
			if p.GetInstanceId() == id {
				return true
			}
		}
		return false
	}
	// Replica r1 has seen its own record in a recompute before the forget.
	eventually(t, "r0 lists the proxy streaming to r1", listed)
	time.Sleep(200 * time.Millisecond)
	if _, err := op.ForgetProxy(ctx(t), &meshv1.ForgetProxyRequest{InstanceId: id}); err == nil {
		t.Fatal("forget without force of a proxy streaming to another replica was accepted")
	}
	resp, err := op.ForgetProxy(ctx(t), &meshv1.ForgetProxyRequest{InstanceId: id, Force: true})
	if err != nil || !resp.GetWasConnected() {
		t.Fatalf("forget --force: %v %v, want it done and the proxy connected", resp, err)
	}
	select {
	case err := <-ended:
		t.Logf("r1 ended the stream: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the stream on r1 outlived its forgotten record by 10s")
	}
	time.Sleep(500 * time.Millisecond) // r1's next flush of ACK state
	if listed() {
		t.Error("the forgotten record came back")
	}
}
