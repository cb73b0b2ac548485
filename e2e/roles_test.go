package e2e

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"minimesh/controlplane"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestTopAndProczThroughMeshd: meshctl asks meshd, meshd asks the proxy
// over its existing stream, and the answer shows this process (the proxy
// runs in it) and a socket it holds open.
func TestTopAndProczThroughMeshd(t *testing.T) {
	m := startMesh(t, controlplane.Config{}, 1)
	st := waitStates(t, m.meshd, map[string]meshv1.SyncState{"api": meshv1.SyncState_SYNC_STATE_SYNCED})
	instance := st["api"].Proxy.InstanceId

	// A socket only this test opened, to find in procz.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())

	pid := strconv.Itoa(os.Getpid())
	out := meshctlRun(t, m.meshd, "top", instance)
	if !strings.Contains(out, pid) {
		t.Fatalf("meshctl top does not list this process (pid %s):\n%s", pid, out)
	}
	out = meshctlRun(t, m.meshd, "top", instance, "-o", "json")
	if !strings.Contains(out, `"pid":`+pid) && !strings.Contains(out, `"pid": `+pid) {
		t.Errorf("meshctl top -o json lacks pid %s:\n%.400s", pid, out)
	}
	var procz string
	eventually(t, 10*time.Second, "procz shows the listening socket", func() error {
		procz = meshctlRun(t, m.meshd, "procz", instance, pid)
		if !strings.Contains(procz, "127.0.0.1:"+port) {
			return fmt.Errorf("no 127.0.0.1:%s in procz", port)
		}
		return nil
	})

	// Only the operator may ask: a workload identity is refused by meshd.
	conn := m.meshd.DialAs(t, m.web.Agent.SVIDSource().Current())
	_, err = meshv1.NewAdminServiceClient(conn).ProxyQuery(t.Context(), &meshv1.ProxyQueryRequest{InstanceId: instance, Request: &meshv1.Request{Query: &meshv1.Request_Topz{Topz: &meshv1.TopzQuery{}}}})
	if err == nil {
		t.Fatal("a workload identity queried a proxy")
	}
}
