package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/kubernetes"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/kube"
	"minimesh/controlplane/kube/kubefake"
	"minimesh/dataplane/agent"
	meshv1 "minimesh/proto/mesh/v1"
)

var webPod = kubefake.Pod{Namespace: "default", ServiceAccount: "web", Name: "web-5c7b9-qx2lp", UID: "7e1d0c3a-aaaa-bbbb-cccc-ddddeeeeffff"}

const webPodInstance = "web-5c7b9-qx2lp-7e1d0c3a"

// k8sMeshd is a real meshd whose Kubernetes API is the fake one.
func k8sMeshd(t *testing.T) (*controlplanetest.Meshd, *kubefake.API) {
	t.Helper()
	api := kubefake.Start(t)
	c, err := kubernetes.NewForConfig(api.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	m := controlplanetest.Start(t, controlplane.Config{TokenReviewer: kube.NewTokenReviewer(c, kube.ReviewerOptions{Timeout: 2 * time.Second})})
	return m, api
}

// writeToken is the kubelet writing the projected token file.
func writeToken(t *testing.T, path, tok string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func podAgent(t *testing.T, m *controlplanetest.Meshd, stateDir, tokenFile, pins string) *agent.Agent {
	t.Helper()
	a, err := agent.New(agent.Config{ControlPlane: m.Addr, SATokenFile: tokenFile, CAPin: pins, Service: "web", StateDir: stateDir, Advertise: "10.244.0.9:15006", // the pod IP: meshd refuses loopback from a pod
		CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A pod's proxy bootstraps with its projected token, registers as the
// instance meshd names after the pod, and renews with a fresh token each
// time; once the pod is deleted, neither it nor a copy of its key renews.
func TestPodJoinsAndRenewsWithItsServiceAccountToken(t *testing.T) {
	m, api := k8sMeshd(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeToken(t, tokenFile, api.Token(webPod, 10*time.Minute, kube.Audience))
	// Two pins, as inject writes during a rotation: any one suffices.
	other := certs.SPKIPin(mustCA(t).Root())
	a := podAgent(t, m, filepath.Join(dir, "state"), tokenFile, other+","+m.RootPin())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "registered", func() bool { return a.Connected() }, a.Ready)
	leaf := a.SVIDSource().Current().Certificates[0]
	if a.InstanceID() != webPodInstance || certs.InstanceID(leaf) != webPodInstance || certs.PodUID(leaf) != webPod.UID {
		t.Fatalf("instance %q, SVID instance %q pod %q", a.InstanceID(), certs.InstanceID(leaf), certs.PodUID(leaf))
	}
	if leaf.URIs[0].String() != "spiffe://minimesh.local/ns/default/sa/web" {
		t.Fatalf("SVID of %s", leaf.URIs[0])
	}
	cancel()
	<-done

	// Renew reads the file again: a new token (the kubelet rotated it) is
	// sent and reviewed.
	writeToken(t, tokenFile, api.Token(webPod, 10*time.Minute, kube.Audience))
	before := api.Reviews()
	a2 := podAgent(t, m, filepath.Join(dir, "state"), tokenFile, m.RootPin()) // restart: loads the SVID
	if a2.InstanceID() != webPodInstance {
		t.Fatalf("restarted agent is instance %q", a2.InstanceID())
	}
	agent.RenewOnce(t, a2)
	if api.Reviews() != before+1 {
		t.Fatalf("%d reviews for one renewal, want 1", api.Reviews()-before)
	}
	renewed := a2.SVIDSource().Current().Certificates[0]
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 || certs.PodUID(renewed) != webPod.UID || certs.InstanceID(renewed) != webPodInstance {
		t.Fatalf("renewal kept serial %s / lost the pod binding", renewed.SerialNumber)
	}
	// Without the file the agent does not call meshd.
	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	if err := agent.Refresh(a2); err == nil || !strings.Contains(err.Error(), "--sa-token-file") {
		t.Fatalf("renewal without the token file: %v", err)
	}

	// A copy of the key and SVID elsewhere, with a token taken from the pod.
	stolen := filepath.Join(t.TempDir(), "stolen")
	copyState(t, filepath.Join(dir, "state"), stolen)
	writeToken(t, tokenFile, api.Token(webPod, 10*time.Minute, kube.Audience))
	thief := podAgent(t, m, stolen, tokenFile, m.RootPin())
	refused := m.Counter(t, "minimesh_meshd_identity_refused_total", "reason", "sa_token_unauthenticated")
	api.DeletePod(webPod.UID)
	for name, ag := range map[string]*agent.Agent{"the pod's own proxy": a2, "a copy of its key": thief} {
		if err := agent.Refresh(ag); status.Code(unwrap(err)) != codes.Unauthenticated || !strings.Contains(err.Error(), "pod not found") {
			t.Errorf("%s renewing after the pod was deleted: %v, want Unauthenticated", name, err)
		}
	}
	if got := m.Counter(t, "minimesh_meshd_identity_refused_total", "reason", "sa_token_unauthenticated"); got != refused+2 {
		t.Errorf("refusals counted %v, want %v", got, refused+2)
	}
}

// The Kubernetes API down: meshd fails closed with Unavailable naming it,
// and the proxy keeps retrying (it is not told its credential is bad).
func TestPodBootstrapFailsClosedWhenTheAPIIsDown(t *testing.T) {
	m, api := k8sMeshd(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeToken(t, tokenFile, api.Token(webPod, 10*time.Minute, kube.Audience))
	api.Close()
	a := podAgent(t, m, filepath.Join(dir, "state"), tokenFile, m.RootPin())
	err := agent.Refresh(a)
	if status.Code(unwrap(err)) != codes.Unavailable || !strings.Contains(err.Error(), "Kubernetes API") {
		t.Fatalf("bootstrap with the API down: %v", err)
	}
	if a.SVIDSource().Current() != nil {
		t.Fatal("an SVID was issued")
	}
	if got := m.Counter(t, "minimesh_meshd_identity_refused_total", "reason", "kube_unavailable"); got != 1 {
		t.Fatalf("kube_unavailable counted %v times", got)
	}
}

// A meshd without Kubernetes API access refuses a token (FailedPrecondition,
// saying to use a join token); a token of another audience is refused.
func TestPodBootstrapRefusals(t *testing.T) {
	plain := controlplanetest.Start(t, controlplane.Config{})
	api := kubefake.Start(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeToken(t, tokenFile, api.Token(webPod, 10*time.Minute, kube.Audience))
	err := agent.Refresh(podAgent(t, plain, filepath.Join(dir, "s1"), tokenFile, plain.RootPin()))
	if status.Code(unwrap(err)) != codes.FailedPrecondition || !strings.Contains(err.Error(), "join token") {
		t.Fatalf("meshd without API access: %v", err)
	}
	m, api2 := k8sMeshd(t)
	writeToken(t, tokenFile, api2.Token(webPod, 10*time.Minute, "https://kubernetes.default.svc"))
	err = agent.Refresh(podAgent(t, m, filepath.Join(dir, "s2"), tokenFile, m.RootPin()))
	if status.Code(unwrap(err)) != codes.Unauthenticated || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("a token for the API server's audience: %v", err)
	}
	if _, err := agent.New(agent.Config{ControlPlane: m.Addr, SATokenFile: tokenFile, Service: "web", StateDir: filepath.Join(dir, "s3")}); err == nil || !strings.Contains(err.Error(), "--ca-pin") {
		t.Fatalf("--sa-token-file without --ca-pin: %v", err)
	}
	if _, err := agent.New(agent.Config{ControlPlane: m.Addr, SATokenFile: tokenFile, Token: "x.y", CAPin: m.RootPin(), Service: "web", StateDir: filepath.Join(dir, "s4")}); err == nil {
		t.Fatal("a join token and a token file both accepted")
	}
	if _, err := agent.New(agent.Config{ControlPlane: m.Addr, SATokenFile: tokenFile, CAPin: m.RootPin() + ",sha256:00", Service: "web", StateDir: filepath.Join(dir, "s5")}); err == nil || !strings.Contains(err.Error(), "pin 2 of 2") {
		t.Fatalf("a bad second pin: %v", err)
	}
}

// An impostor meshd (a gRPC IdentityService on a chain of another CA,
// with meshd's SPIFFE ID) never receives the token: the proxy's pin check
// fails the handshake before any request. The control pins the impostor's
// own root and shows the capture would see the token.
func TestServiceAccountTokenIsNeverSentToAnImpostor(t *testing.T) {
	real := mustCA(t)
	imp := startImpostor(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	api := kubefake.Start(t)
	tok := api.Token(webPod, 10*time.Minute, kube.Audience)
	writeToken(t, tokenFile, tok)
	a, err := agent.New(agent.Config{ControlPlane: imp.addr, SATokenFile: tokenFile, CAPin: certs.SPKIPin(real.Root()), Service: "web", StateDir: filepath.Join(dir, "state"), CallTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Refresh(a); err == nil {
		t.Fatal("bootstrapped against the impostor")
	}
	if imp.accepted() == 0 {
		t.Fatal("the proxy never reached the impostor: the test proves nothing")
	}
	if imp.saw([]byte(tok)) || imp.calls() != 0 {
		t.Fatalf("the impostor received the token (%d calls)", imp.calls())
	}
	// Control: pinned to the impostor's root, the same capture sees it.
	b, err := agent.New(agent.Config{ControlPlane: imp.addr, SATokenFile: tokenFile, CAPin: imp.pin, Service: "web", StateDir: filepath.Join(dir, "state2"), CallTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_ = agent.Refresh(b)
	if !imp.saw([]byte(tok)) || imp.calls() != 1 {
		t.Fatalf("control: the impostor pinned by the proxy did not receive the token (%d calls): the capture is broken", imp.calls())
	}
}

type impostor struct {
	addr, pin string

	mu      sync.Mutex
	conns   int
	read    bytes.Buffer // every plaintext byte the proxy sent after TLS
	bootstr int
}

func (i *impostor) accepted() int { i.mu.Lock(); defer i.mu.Unlock(); return i.conns }
func (i *impostor) calls() int    { i.mu.Lock(); defer i.mu.Unlock(); return i.bootstr }
func (i *impostor) saw(b []byte) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return bytes.Contains(i.read.Bytes(), b)
}

type impostorService struct {
	meshv1.UnimplementedIdentityServiceServer
	i *impostor
}

func (s impostorService) Bootstrap(context.Context, *meshv1.BootstrapRequest) (*meshv1.BootstrapResponse, error) {
	s.i.mu.Lock()
	s.i.bootstr++
	s.i.mu.Unlock()
	return nil, status.Error(codes.Unavailable, "impostor")
}

func startImpostor(t *testing.T) *impostor {
	t.Helper()
	ca := mustCA(t)
	svid, err := ca.IssueServingSVID(certs.MeshdID(spiffeid.RequireTrustDomainFromString("minimesh.local")), 0)
	if err != nil {
		t.Fatal(err)
	}
	src := certs.NewSVIDSource(nil)
	src.Set(svid)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	i := &impostor{addr: lis.Addr().String(), pin: certs.SPKIPin(ca.Root())}
	srv := grpc.NewServer()
	meshv1.RegisterIdentityServiceServer(srv, impostorService{i: i})
	tc := certs.OptionalClientServerConfig(src)
	tc.NextProtos = []string{"h2"} // what gRPC's own TLS credentials add
	go func() { _ = srv.Serve(&recordingListener{Listener: tls.NewListener(lis, tc), i: i}) }()
	t.Cleanup(srv.Stop)
	return i
}

// recordingListener keeps what its (TLS) connections read.
type recordingListener struct {
	net.Listener
	i *impostor
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.i.mu.Lock()
	l.i.conns++
	l.i.mu.Unlock()
	return &recordingConn{Conn: c, i: l.i}, nil
}

type recordingConn struct {
	net.Conn
	i *impostor
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.i.mu.Lock()
	c.i.read.Write(p[:n])
	c.i.mu.Unlock()
	return n, err
}

func mustCA(t *testing.T) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: spiffeid.RequireTrustDomainFromString("minimesh.local")})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func copyState(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"svid.pem", "svid_key.pem", "bundle.pem", "instance_id"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool, why func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, why())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func unwrap(err error) error {
	for err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
	return err
}
