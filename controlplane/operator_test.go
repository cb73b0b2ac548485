package controlplane_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/admin"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

// loadOperator reads an operator credential from dir.
func loadOperator(t *testing.T, dir string) *x509svid.SVID {
	t.Helper()
	svid, _, err := certs.LoadSVID(dir, spiffeid.RequireTrustDomainFromString(td))
	if err != nil {
		t.Fatalf("operator credential in %s: %v", dir, err)
	}
	return svid
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func operators(t *testing.T, c meshv1.AdminServiceClient) map[string]*meshv1.OperatorCredential {
	t.Helper()
	resp, err := c.ListOperators(ctx(t), &meshv1.ListOperatorsRequest{})
	if err != nil {
		t.Fatalf("ListOperators: %v", err)
	}
	out := map[string]*meshv1.OperatorCredential{}
	for _, o := range resp.GetOperators() {
		out[o.GetSerial()] = o
	}
	return out
}

// TestOperatorCredentialRevokedBySerial: the operator identity is one
// SPIFFE ID for every credential, so revocation is by serial, and the
// operator rule reads the revoked set at every call.
func TestOperatorCredentialRevokedBySerial(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "meshd")
	m := controlplanetest.Start(t, controlplane.Config{DataDir: dataDir})
	first := loadOperator(t, m.OperatorCredentialDir())
	firstSerial := authn.Serial(first.Certificates[0])

	// A second credential, issued offline against the same store.
	m.Stop()
	outDir := filepath.Join(t.TempDir(), "op2")
	issued, err := controlplane.IssueOperator(controlplane.Config{DataDir: dataDir}, outDir, 0)
	if err != nil {
		t.Fatalf("IssueOperator: %v", err)
	}
	m = m.Restart(t)
	second := loadOperator(t, outDir)
	if authn.Serial(second.Certificates[0]) != issued.Serial || issued.Serial == firstSerial {
		t.Fatalf("issued serial %s, file has %s, first is %s", issued.Serial, authn.Serial(second.Certificates[0]), firstSerial)
	}

	c1 := meshv1.NewAdminServiceClient(m.DialAs(t, first))
	c2 := meshv1.NewAdminServiceClient(m.DialAs(t, second))
	ops := operators(t, c1)
	if o := ops[firstSerial]; o == nil || o.GetIssuedBy() != admin.IssuedAtStart || !o.GetCaller() || o.GetRevoked() || o.GetNotAfter() == nil {
		t.Errorf("first credential listed as %v, want issued_by %s, caller, not revoked", o, admin.IssuedAtStart)
	}
	if o := ops[issued.Serial]; o == nil || o.GetIssuedBy() != admin.IssuedOffline || o.GetCaller() || !o.GetNotAfter().AsTime().Equal(issued.NotAfter) {
		t.Errorf("offline credential listed as %v, want issued_by %s, expiring %v", o, admin.IssuedOffline, issued.NotAfter)
	}

	// Bad serials are refused and change nothing.
	workload := bootstrap(t, m, "default", "web")
	for serial, want := range map[string]codes.Code{
		"":                                     codes.InvalidArgument,
		"not-hex":                              codes.InvalidArgument,
		"abcdef0123":                           codes.NotFound,
		authn.Serial(workload.Certificates[0]): codes.InvalidArgument,
	} {
		_, err := c1.RevokeOperator(ctx(t), &meshv1.RevokeOperatorRequest{Serial: serial})
		if status.Code(err) != want || !strings.Contains(status.Convert(err).Message(), "serial") {
			t.Errorf("RevokeOperator(%q) = %v, want %v naming the serial", serial, err, want)
		}
	}

	// Revoke the credential this very call is made with (openssl's form of
	// the serial): the call succeeds, the next one on the same connection
	// is refused, and counted.
	before := m.Counter(t, "minimesh_meshd_auth_refused_total", "reason", "revoked_certificate")
	resp, err := c1.RevokeOperator(ctx(t), &meshv1.RevokeOperatorRequest{Serial: strings.ToUpper(firstSerial)})
	if err != nil {
		t.Fatalf("RevokeOperator(own serial): %v", err)
	}
	if !resp.GetOperator().GetCaller() || !resp.GetOperator().GetRevoked() || resp.GetRemaining() != 1 || resp.GetAlreadyRevoked() {
		t.Errorf("RevokeOperator = %v, want the caller's own credential revoked, 1 remaining", resp)
	}
	if _, err := c1.ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{}); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("call with the revoked credential: %v, want Unauthenticated (revoked)", err)
	}
	if got := m.Counter(t, "minimesh_meshd_auth_refused_total", "reason", "revoked_certificate"); got != before+1 {
		t.Errorf("revoked_certificate refusals = %v, want %v", got, before+1)
	}
	// The other credential still works and sees the revocation.
	ops = operators(t, c2)
	if !ops[firstSerial].GetRevoked() || ops[firstSerial].GetRevokedAt() == nil || ops[issued.Serial].GetRevoked() || !ops[issued.Serial].GetCaller() {
		t.Errorf("after revoke: %v", ops)
	}
	// Revoking it again changes nothing and says so.
	if resp, err := c2.RevokeOperator(ctx(t), &meshv1.RevokeOperatorRequest{Serial: firstSerial}); err != nil || !resp.GetAlreadyRevoked() {
		t.Errorf("second revoke: %v %v, want already_revoked", resp, err)
	}
	// The last valid credential is not revoked without force.
	if _, err := c2.RevokeOperator(ctx(t), &meshv1.RevokeOperatorRequest{Serial: issued.Serial}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "meshd operator issue") {
		t.Errorf("revoking the last credential: %v, want FailedPrecondition naming --force and meshd operator issue", err)
	}
	if _, err := c2.ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{}); err != nil {
		t.Fatalf("a refused revoke changed something: %v", err)
	}

	// A restart replaces the revoked credential in the data dir with a
	// fresh one; the revoked one stays refused.
	m = m.Restart(t)
	fresh := loadOperator(t, m.OperatorCredentialDir())
	if authn.Serial(fresh.Certificates[0]) == firstSerial {
		t.Fatal("meshd kept the revoked credential in its data dir")
	}
	if _, err := meshv1.NewAdminServiceClient(m.DialAs(t, fresh)).ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{}); err != nil {
		t.Fatalf("fresh credential: %v", err)
	}
	if _, err := meshv1.NewAdminServiceClient(m.DialAs(t, first)).ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("revoked credential after restart: %v, want Unauthenticated", err)
	}
	// Revoked, it is no workload either.
	if _, err := meshv1.NewIdentityServiceClient(m.DialAs(t, first)).Renew(ctx(t), &meshv1.RenewRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Renew with the revoked operator credential: %v, want Unauthenticated", err)
	}
}

// TestOfflineOperatorCommands: issue and revoke work on a stopped meshd's
// store, refuse a running one, and a revocation made offline is in force
// when meshd starts.
func TestOfflineOperatorCommands(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "meshd")
	m := controlplanetest.Start(t, controlplane.Config{DataDir: dataDir})
	start := loadOperator(t, m.OperatorCredentialDir())

	_, err := controlplane.RevokeOperator(controlplane.Config{DataDir: dataDir}, authn.Serial(start.Certificates[0]), true)
	if !errors.Is(err, controlplane.ErrMeshdRunning) || !strings.Contains(err.Error(), "meshctl operator") {
		t.Fatalf("offline revoke while meshd runs: %v, want ErrMeshdRunning naming meshctl operator", err)
	}
	m.Stop()

	// No existing credential needed: the data dir's is removed first.
	out := filepath.Join(t.TempDir(), "op")
	issued, err := controlplane.IssueOperator(controlplane.Config{DataDir: dataDir}, out, 0)
	if err != nil {
		t.Fatalf("IssueOperator: %v", err)
	}
	for _, f := range []string{certs.SVIDFile, certs.SVIDKeyFile, certs.BundleFile} {
		if mode := fileMode(t, filepath.Join(out, f)); mode != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, mode)
		}
	}
	if mode := fileMode(t, out); mode != 0o700 {
		t.Errorf("out dir mode %v, want 0700", mode)
	}
	if resp, err := controlplane.RevokeOperator(controlplane.Config{DataDir: dataDir}, issued.Serial, false); err != nil || !resp.GetOperator().GetRevoked() {
		t.Fatalf("offline revoke: %v %v", resp, err)
	}
	if _, err := controlplane.RevokeOperator(controlplane.Config{DataDir: dataDir}, "ffff", false); err == nil || !strings.Contains(err.Error(), "no certificate ffff") {
		t.Errorf("offline revoke of an unknown serial: %v", err)
	}
	// Not a data dir: nothing is created.
	empty := filepath.Join(t.TempDir(), "empty")
	if _, err := controlplane.IssueOperator(controlplane.Config{DataDir: empty}, filepath.Join(t.TempDir(), "x"), 0); err == nil {
		t.Error("IssueOperator on a missing data dir succeeded")
	}

	m = m.Restart(t)
	if _, err := meshv1.NewAdminServiceClient(m.DialAs(t, loadOperator(t, out))).ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("credential revoked offline, after start: %v, want Unauthenticated", err)
	}
	if _, err := meshv1.NewAdminServiceClient(m.DialAs(t, start)).ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{}); err != nil {
		t.Fatalf("unrevoked credential: %v", err)
	}
}

// TestReservedIdentitiesCannotBeDenied: denying the operator identity used
// to report success and change nothing.
func TestReservedIdentitiesCannotBeDenied(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	op := m.Operator(t)
	for _, id := range []string{certs.OperatorID(m.TrustDomain()).String(), certs.MeshdID(m.TrustDomain()).String()} {
		_, err := op.DenyIdentity(ctx(t), &meshv1.DenyIdentityRequest{SpiffeId: id})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "meshctl operator revoke") {
			t.Errorf("DenyIdentity(%s) = %v, want InvalidArgument naming meshctl operator revoke", id, err)
		}
	}
	for _, id := range []string{"spiffe://other.example/ns/default/sa/web", "spiffe://" + td + "/not/a/workload"} {
		if _, err := op.DenyIdentity(ctx(t), &meshv1.DenyIdentityRequest{SpiffeId: id}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("DenyIdentity(%s) = %v, want InvalidArgument", id, err)
		}
	}
	if _, err := op.DenyIdentity(ctx(t), &meshv1.DenyIdentityRequest{SpiffeId: "spiffe://" + td + "/ns/default/sa/web"}); err != nil {
		t.Errorf("DenyIdentity of a workload: %v", err)
	}
}

// auditSink is a log sink the server's goroutines write concurrently.
type auditSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *auditSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *auditSink) lines(t *testing.T, msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(s.b.Bytes(), []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(l, &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// TestStateChangingCallsAreAudited: every state-changing AdminService call
// is logged with the caller's serial and SPIFFE ID; reads and dry runs
// are not.
func TestStateChangingCallsAreAudited(t *testing.T) {
	audited, readOnly := controlplane.AuditedMethods(), controlplane.ReadOnlyMethods()
	for _, md := range meshv1.AdminService_ServiceDesc.Methods {
		name := "/" + meshv1.AdminService_ServiceDesc.ServiceName + "/" + md.MethodName
		if audited[name] == readOnly[name] {
			t.Errorf("%s must be in exactly one of AuditedMethods and ReadOnlyMethods", name)
		}
	}
	for _, sd := range meshv1.AdminService_ServiceDesc.Streams {
		name := "/" + meshv1.AdminService_ServiceDesc.ServiceName + "/" + sd.StreamName
		if audited[name] == readOnly[name] {
			t.Errorf("%s must be in exactly one of AuditedMethods and ReadOnlyMethods", name)
		}
	}

	var logs auditSink
	m := controlplanetest.Start(t, controlplane.Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	op := loadOperator(t, m.OperatorCredentialDir())
	serial := authn.Serial(op.Certificates[0])
	c := meshv1.NewAdminServiceClient(m.DialAs(t, op))
	if _, err := c.CreateJoinToken(ctx(t), &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "web"}); err != nil {
		t.Fatal(err)
	}
	svc := serviceResource("web")
	if _, err := c.Apply(ctx(t), &meshv1.ApplyRequest{Resources: []*meshv1.Resource{svc}, DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{}); err != nil {
		t.Fatal(err)
	}
	// A refused change is audited too, with its code.
	if _, err := c.RevokeJoinToken(ctx(t), &meshv1.RevokeJoinTokenRequest{Id: "nope"}); err == nil {
		t.Fatal("RevokeJoinToken of an unknown token succeeded")
	}
	stream, err := c.Backup(ctx(t), &meshv1.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	m.Stop() // every handler has returned and logged

	got := map[string]map[string]any{}
	for _, rec := range logs.lines(t, "audit") {
		method, _ := rec["method"].(string)
		got[method] = rec
		if rec["serial"] != serial || rec["caller"] != certs.OperatorID(m.TrustDomain()).String() {
			t.Errorf("audit line %v: want serial %s and the operator ID", rec, serial)
		}
	}
	for _, want := range []string{meshv1.AdminService_CreateJoinToken_FullMethodName, meshv1.AdminService_RevokeJoinToken_FullMethodName, meshv1.AdminService_Backup_FullMethodName} {
		if got[want] == nil {
			t.Errorf("no audit line for %s; got %v", want, got)
		}
	}
	if rec := got[meshv1.AdminService_RevokeJoinToken_FullMethodName]; rec != nil && rec["code"] == codes.OK.String() {
		t.Errorf("refused RevokeJoinToken audited as %v", rec["code"])
	}
	for _, not := range []string{meshv1.AdminService_Apply_FullMethodName, meshv1.AdminService_ListJoinTokens_FullMethodName} {
		if got[not] != nil {
			t.Errorf("%s (a read or a dry run) was audited: %v", not, got[not])
		}
	}
}
