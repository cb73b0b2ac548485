package controlplane_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"minimesh/controlplane/store"
	"minimesh/internal/meshctl"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestSIGKILLLosesNoAcknowledgedApply runs meshd as a subprocess, applies in
// a loop, kills it with SIGKILL at a random moment, restarts it on the same
// dir and checks every acknowledged apply is there with growing revisions.
func TestSIGKILLLosesNoAcknowledgedApply(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills meshd several times")
	}
	bin := filepath.Join(t.TempDir(), "meshd")
	build := exec.Command("go", "build", "-o", bin, "minimesh/cmd/meshd")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build meshd: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	acked := map[string]uint64{} // service name -> revision acknowledged
	var lastRev uint64
	n := 0
	for round := 0; round < 4; round++ {
		addr := freeAddr(t)
		cmd := exec.Command(bin, "--data-dir", dir, "--listen", addr, "--log-level", "error")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		admin, closeConn := operatorClient(t, dir, addr)

		// Everything acknowledged so far survived the last kill.
		resp, err := admin.GetResources(ctx(t), &meshv1.GetResourcesRequest{Kind: "Service"})
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: list after restart: %v", round, err)
		}
		have := map[string]uint64{}
		for _, r := range resp.Resources {
			have[r.Name] = r.Revision
		}
		for name, rev := range acked {
			if got, ok := have[name]; !ok || got != rev {
				t.Errorf("round %d: acknowledged %s@%d is %v after SIGKILL (present=%v)", round, name, rev, got, ok)
			}
		}
		if resp.Revision < lastRev {
			t.Errorf("round %d: revision went back from %d to %d", round, lastRev, resp.Revision)
		}

		// Apply in a loop until killed.
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var mu sync.Mutex
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				n++
				name := fmt.Sprintf("svc-%d", n)
				mu.Unlock()
				c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				r, err := admin.Apply(c, &meshv1.ApplyRequest{Resources: []*meshv1.Resource{serviceResource(name)}})
				cancel()
				if err != nil {
					return // killed
				}
				mu.Lock()
				if r.Revision <= lastRev {
					t.Errorf("revision %d after %d", r.Revision, lastRev)
				}
				lastRev = r.Revision
				acked[name] = r.Revision
				mu.Unlock()
			}
		}()
		time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		close(stop)
		wg.Wait()
		closeConn()
	}
	if len(acked) < 4 {
		t.Fatalf("only %d applies were acknowledged; the test proved little", len(acked))
	}
	st, err := store.Open(store.Config{Path: filepath.Join(dir, "meshd.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.CheckConsistency(); err != nil {
		t.Fatalf("memdb and bbolt disagree after restart: %v", err)
	}
	t.Logf("%d applies acknowledged across 4 SIGKILLs, last revision %d", len(acked), lastRev)
}

func serviceResource(name string) *meshv1.Resource {
	return &meshv1.Resource{
		ApiVersion: "minimesh.io/v1alpha1", Kind: "Service", Name: name, Namespace: "default",
		Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{
			Ports:             []*meshv1.ServicePort{{Name: "http", Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
			ServingIdentities: []string{"spiffe://minimesh.local/ns/default/sa/" + name},
		}},
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// operatorClient waits for meshd's operator credential and answers.
func operatorClient(t *testing.T, dir, addr string) (meshv1.AdminServiceClient, func()) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if conn, err := meshctl.Dial(addr, filepath.Join(dir, "operator")); err == nil {
			c := meshv1.NewAdminServiceClient(conn)
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = c.ListProxies(cctx, &meshv1.ListProxiesRequest{})
			cancel()
			if err == nil {
				return c, func() { conn.Close() }
			}
			conn.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("meshd on %s did not answer", addr)
	return nil, nil
}
