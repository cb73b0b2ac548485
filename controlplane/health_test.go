package controlplane_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// get fetches path from h and returns the status and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitReady waits until Run serves (Start returns as it begins).
func waitReady(t *testing.T, m *controlplanetest.Meshd) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Ready: %v", m.Ready())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHealth: meshd answers grpc.health.v1 Check and List on its TLS port to
// a client with no certificate (one that trusts meshd's root, as a proxy
// bootstrapping or grpc_health_probe with the CA does) and nothing else:
// Watch and every operator method stay refused on that connection. A
// client that does not trust meshd's root gets no answer. /readyz says
// "starting" before Run, "ready" while serving and "shutting down" after;
// /livez is 200 throughout.
func TestHealth(t *testing.T) {
	// Built, not running: not ready.
	srv, err := controlplane.New(controlplane.Config{DataDir: filepath.Join(t.TempDir(), "meshd")})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, srv.HealthHandler(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before Run: %d %q, want 503 naming the start", code, body)
	}
	if code, body := get(t, srv.HealthHandler(), "/livez"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/livez before Run: %d %q, want 200 ok", code, body)
	}
	srv.Close()

	m := controlplanetest.Start(t, controlplane.Config{})
	waitReady(t, m)
	if code, body := get(t, m.HealthHandler(), "/readyz"); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz while serving: %d %q, want 200 ready", code, body)
	}
	if code, _ := get(t, m.HealthHandler(), "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the health handler: %d, want 404 (it serves only /livez and /readyz)", code)
	}

	anon := m.DialAnonymous(t)
	hc := healthpb.NewHealthClient(anon)
	for _, svc := range []string{"", "mesh.v1.IdentityService", "mesh.v1.AdminService", "mesh.v1.ConfigService", "mesh.v1.ReplicaService"} {
		resp, err := hc.Check(ctx(t), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) without a client certificate: %v %v, want SERVING", svc, resp.GetStatus(), err)
		}
	}
	if _, err := hc.Check(ctx(t), &healthpb.HealthCheckRequest{Service: "mesh.v1.NoSuchService"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check of an unknown service: %v, want NotFound", err)
	}
	list, err := hc.List(ctx(t), &healthpb.HealthListRequest{})
	if err != nil || len(list.GetStatuses()) != 5 {
		t.Errorf("List: %v %v, want meshd and its 4 services", list.GetStatuses(), err)
	}
	// Watch would hold a stream open for any anonymous caller: refused.
	w, err := hc.Watch(ctx(t), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("Watch without a certificate: %v, want PermissionDenied", err)
	}
	// The connection health answers on opens nothing else.
	if _, err := meshv1.NewAdminServiceClient(anon).Version(ctx(t), &meshv1.VersionRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Version without a certificate: %v, want Unauthenticated", err)
	}
	// A client that does not trust meshd's root is not answered.
	untrusting, err := grpc.NewClient(m.Addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	defer untrusting.Close()
	if _, err := healthpb.NewHealthClient(untrusting).Check(ctx(t), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("Check from a client that does not trust meshd: %v, want Unavailable (no handshake)", err)
	}

	m.Stop()
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("Ready after Run returned: %v, want shutting down", err)
	}
	if code, body := get(t, m.HealthHandler(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz after Run returned: %d %q, want 503 naming the shutdown", code, body)
	}
}
