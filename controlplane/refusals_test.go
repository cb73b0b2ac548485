package controlplane_test

import (
	"strings"
	"testing"
	"time"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// A client whose bundle lacks meshd's root (as after a restore from a
// backup older than a rotation: the proxies hold the newer root) aborts
// the handshake; meshd counts it by address, and ca status reports it.
func TestClientsRefusingMeshdsCertificateAreReported(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	st, err := m.Operator(t).CAStatus(ctx(t), &meshv1.CAStatusRequest{})
	if err != nil || st.RefusedByClients != 0 {
		t.Fatalf("fresh meshd: %d refusals, %v", st.GetRefusedByClients(), err)
	}
	other := certstest.NewCA(t, "minimesh.local")
	svid := certstest.SVID(t, other, "spiffe://minimesh.local/ns/default/sa/web")
	src := certs.NewSVIDSource(nil)
	src.Set(svid)
	conn := m.Dial(t, certs.MTLSClientConfig(src, certs.NewBundleSource(other.Bundle()), certs.AuthorizeID(certs.MeshdID(m.TrustDomain())), certs.TLSOptions{}))
	if _, err := meshv1.NewAdminServiceClient(conn).ListProxies(ctx(t), &meshv1.ListProxiesRequest{}); err == nil {
		t.Fatal("a client with another root's bundle got through")
	}
	// meshd reads the client's alert a moment after the client gave up.
	for i := 0; i < 200; i++ {
		if st, err = m.Operator(t).CAStatus(ctx(t), &meshv1.CAStatusRequest{}); err != nil || st.RefusedByClients > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if st.RefusedByClients == 0 || len(st.RefusedByClientAddrs) != 1 || !strings.HasPrefix(st.RefusedByClientAddrs[0], "127.0.0.1") {
		t.Fatalf("ca status: %d refusals from %v, want the client's", st.RefusedByClients, st.RefusedByClientAddrs)
	}
}
