package controlplane_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"minimesh/certs"
	"minimesh/certs/certstest"
	"minimesh/controlplane"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/controlplanetest"
	meshv1 "minimesh/proto/mesh/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const td = "minimesh.local"

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func csrFor(t *testing.T, id string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := certs.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := certs.NewCSR(key, spiffeid.RequireFromString(id))
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// bootstrap gets an SVID for ns/sa through a fresh token.
func bootstrap(t *testing.T, m *controlplanetest.Meshd, ns, sa string) *x509svid.SVID {
	t.Helper()
	return m.Bootstrap(t, ns, sa)
}

// TestEveryMethodHasItsRule lists every method from the service descriptors
// and checks, on a live server, who can and cannot reach it.
func TestEveryMethodHasItsRule(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	rules := controlplane.MethodRules()
	if err := rules.Check(controlplane.Services()...); err != nil {
		t.Fatal(err)
	}
	workload := bootstrap(t, m, "default", "web")
	op, _, err := certs.LoadSVID(m.OperatorCredentialDir(), m.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	callers := map[string]*grpc.ClientConn{
		"anonymous": m.DialAnonymous(t),
		"workload":  m.DialAs(t, workload),
		"operator":  m.DialAs(t, op),
	}
	// allowed[rule][caller]
	allowed := map[authn.Rule]map[string]bool{
		authn.Public:   {"anonymous": true, "workload": true, "operator": true},
		authn.Workload: {"workload": true},
		authn.Operator: {"operator": true},
	}
	n := 0
	for _, sd := range controlplane.Services() {
		var methods []string
		for _, md := range sd.Methods {
			methods = append(methods, "/"+sd.ServiceName+"/"+md.MethodName)
		}
		for _, sm := range sd.Streams {
			methods = append(methods, "/"+sd.ServiceName+"/"+sm.StreamName)
		}
		for _, method := range methods {
			rule := rules[method]
			for who, conn := range callers {
				n++
				err := invokeEmpty(t, conn, method)
				code := status.Code(err)
				denied := code == codes.Unauthenticated || code == codes.PermissionDenied
				if allowed[rule][who] && denied {
					t.Errorf("%s as %s (rule %s): refused with %v, want reachable", method, who, rule, err)
				}
				if !allowed[rule][who] && !denied {
					t.Errorf("%s as %s (rule %s): got %v, want Unauthenticated or PermissionDenied", method, who, rule, err)
				}
			}
		}
	}
	if n < 3*8 {
		t.Fatalf("checked only %d method/caller pairs", n)
	}
	// A method no rule names is refused too (deny by default).
	err = callers["operator"].Invoke(ctx(t), "/mesh.v1.AdminService/NoSuchMethod", &emptypb.Empty{}, &emptypb.Empty{})
	if c := status.Code(err); c != codes.PermissionDenied && c != codes.Unimplemented {
		t.Errorf("unknown method: %v, want PermissionDenied or Unimplemented", err)
	}
}

// invokeEmpty calls a method with an empty request (valid for any message).
func invokeEmpty(t *testing.T, conn *grpc.ClientConn, method string) error {
	c, cancel := context.WithTimeout(ctx(t), 5*time.Second)
	defer cancel()
	if method == meshv1.ConfigService_Stream_FullMethodName {
		s, err := conn.NewStream(c, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
		if err != nil {
			return err
		}
		// A refused stream may already be closed: SendMsg then returns
		// io.EOF and the status comes from RecvMsg.
		_ = s.SendMsg(&meshv1.StreamRequest{})
		return s.RecvMsg(&meshv1.StreamResponse{})
	}
	return conn.Invoke(c, method, &emptypb.Empty{}, &emptypb.Empty{})
}

// state is what a refused request must not change.
type state struct {
	tokens []*meshv1.JoinToken
	certs  []*meshv1.Certificate
}

func snapshot(t *testing.T, admin meshv1.AdminServiceClient) state {
	t.Helper()
	toks, err := admin.ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := admin.ListCertificates(ctx(t), &meshv1.ListCertificatesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return state{toks.Tokens, cs.Certificates}
}

func (s state) equal(o state) bool {
	if len(s.tokens) != len(o.tokens) || len(s.certs) != len(o.certs) {
		return false
	}
	for i := range s.tokens {
		if !proto.Equal(s.tokens[i], o.tokens[i]) {
			return false
		}
	}
	for i := range s.certs {
		if !proto.Equal(s.certs[i], o.certs[i]) {
			return false
		}
	}
	return true
}

func customCSR(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestBadInputIsRefusedLoggedCountedAndChangesNothing(t *testing.T) {
	clock := certstest.NewClock(time.Now())
	m := controlplanetest.Start(t, controlplane.Config{Clock: clock})
	admin := m.Operator(t)
	anon := meshv1.NewIdentityServiceClient(m.DialAnonymous(t))
	webID := "spiffe://" + td + "/ns/default/sa/web"

	used := m.Token(t, "default", "web", 1)
	_, csr := csrFor(t, webID)
	if _, err := anon.Bootstrap(ctx(t), &meshv1.BootstrapRequest{Token: used.Secret, Csr: csr, InstanceId: "web-used"}); err != nil {
		t.Fatal(err)
	}
	revoked := m.Token(t, "default", "web", 1)
	if _, err := admin.RevokeJoinToken(ctx(t), &meshv1.RevokeJoinTokenRequest{Id: revoked.Token.Id}); err != nil {
		t.Fatal(err)
	}
	expiring, err := admin.CreateJoinToken(ctx(t), &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "web", Ttl: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	fresh := m.Token(t, "default", "web", 5)
	web := bootstrap(t, m, "default", "web")

	weakRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	goodKey, _ := certs.GenerateKey()
	webURI, _ := url.Parse(webID)
	otherURI, _ := url.Parse("spiffe://" + td + "/ns/default/sa/api")
	caExt := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: mustASN1(t, struct {
		IsCA bool `asn1:"optional"`
	}{true})}
	other := certstest.NewCA(t, "other.local")
	foreign := certstest.SVID(t, other, "spiffe://other.local/ns/default/sa/web")

	type call func() error
	bootstrapWith := func(token string, csr []byte) call {
		return func() error {
			_, err := anon.Bootstrap(ctx(t), &meshv1.BootstrapRequest{Token: token, Csr: csr, InstanceId: "web-x"})
			return err
		}
	}
	_, otherCSR := csrFor(t, "spiffe://"+td+"/ns/default/sa/api")
	_, webCSR := csrFor(t, webID)
	cases := []struct {
		name string
		call call
		code codes.Code
		// advance moves the clock before the call and back after.
		advance time.Duration
	}{
		{"reused one-use token", bootstrapWith(used.Secret, webCSR), codes.Unauthenticated, 0},
		{"unknown token", bootstrapWith("0123456789ab.0123456789abcdef0123456789abcdef", webCSR), codes.Unauthenticated, 0},
		{"wrong secret", bootstrapWith(fresh.Token.Id+".0123456789abcdef0123456789abcdef", webCSR), codes.Unauthenticated, 0},
		{"malformed token", bootstrapWith("nonsense", webCSR), codes.InvalidArgument, 0},
		{"revoked token", bootstrapWith(revoked.Secret, webCSR), codes.Unauthenticated, 0},
		{"expired token", bootstrapWith(expiring.Secret, webCSR), codes.Unauthenticated, 2 * time.Minute},
		{"token bound to another identity", bootstrapWith(fresh.Secret, otherCSR), codes.InvalidArgument, 0},
		{"CSR with an extra DNS SAN", bootstrapWith(fresh.Secret, customCSR(t, goodKey, &x509.CertificateRequest{URIs: []*url.URL{webURI}, DNSNames: []string{"evil.example"}})), codes.InvalidArgument, 0},
		{"CSR with two URIs", bootstrapWith(fresh.Secret, customCSR(t, goodKey, &x509.CertificateRequest{URIs: []*url.URL{webURI, otherURI}})), codes.InvalidArgument, 0},
		{"CSR asking to be a CA", bootstrapWith(fresh.Secret, customCSR(t, goodKey, &x509.CertificateRequest{URIs: []*url.URL{webURI}, ExtraExtensions: []pkix.Extension{caExt}})), codes.InvalidArgument, 0},
		{"CSR with RSA-1024", bootstrapWith(fresh.Secret, customCSR(t, weakRSA, &x509.CertificateRequest{URIs: []*url.URL{webURI}})), codes.InvalidArgument, 0},
		{"CSR with P-224", bootstrapWith(fresh.Secret, customCSR(t, p224, &x509.CertificateRequest{URIs: []*url.URL{webURI}})), codes.InvalidArgument, 0},
		{"garbage CSR", bootstrapWith(fresh.Secret, []byte("not a csr")), codes.InvalidArgument, 0},
		{"renew for another identity", func() error {
			_, err := meshv1.NewIdentityServiceClient(m.DialAs(t, web)).Renew(ctx(t), &meshv1.RenewRequest{Csr: otherCSR})
			return err
		}, codes.InvalidArgument, 0},
		{"renew with an expired SVID", func() error {
			_, csr := csrFor(t, webID)
			_, err := meshv1.NewIdentityServiceClient(m.DialAs(t, web)).Renew(ctx(t), &meshv1.RenewRequest{Csr: csr})
			return err
		}, codes.Unauthenticated, 2 * time.Hour},
		{"renew with an SVID of another trust domain", func() error {
			_, csr := csrFor(t, "spiffe://other.local/ns/default/sa/web")
			_, err := meshv1.NewIdentityServiceClient(m.DialAs(t, foreign)).Renew(ctx(t), &meshv1.RenewRequest{Csr: csr})
			return err
		}, codes.Unauthenticated, 0},
		{"admin call with a workload identity", func() error {
			_, err := meshv1.NewAdminServiceClient(m.DialAs(t, web)).CreateJoinToken(ctx(t), &meshv1.CreateJoinTokenRequest{Namespace: "default", ServiceAccount: "web"})
			return err
		}, codes.PermissionDenied, 0},
		{"token for meshd's identity", func() error {
			_, err := admin.CreateJoinToken(ctx(t), &meshv1.CreateJoinTokenRequest{Namespace: certs.SystemNamespace, ServiceAccount: "meshd"})
			return err
		}, codes.PermissionDenied, 0},
		{"token for the operator identity", func() error {
			_, err := admin.CreateJoinToken(ctx(t), &meshv1.CreateJoinTokenRequest{Namespace: certs.SystemNamespace, ServiceAccount: "operator"})
			return err
		}, codes.PermissionDenied, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, admin)
			refusedBefore := refusals(m)
			if tc.advance != 0 {
				clock.Add(tc.advance)
			}
			err := tc.call()
			if tc.advance != 0 {
				clock.Add(-tc.advance)
			}
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			if s := status.Convert(err).Message(); len(s) < 10 {
				t.Errorf("status message %q is not a clear reason", s)
			}
			if !snapshot(t, admin).equal(before) {
				t.Errorf("a refused request changed tokens or certificates")
			}
			if refusals(m) <= refusedBefore {
				t.Errorf("refusal was not counted")
			}
		})
	}
}

func mustASN1(t *testing.T, v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refusals sums every refusal counter meshd exports.
func refusals(m *controlplanetest.Meshd) float64 {
	families, _ := m.Registry.Gather()
	var n float64
	for _, f := range families {
		switch f.GetName() {
		case "minimesh_meshd_auth_refused_total", "minimesh_meshd_identity_refused_total", "minimesh_meshd_admin_refused_total":
			for _, m := range f.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

func TestOneUseTokenRaceHasExactlyOneWinner(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{BootstrapBurst: 100})
	tok := m.Token(t, "default", "web", 1)
	anon := meshv1.NewIdentityServiceClient(m.DialAnonymous(t))
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, losses := 0, 0
	for i := 0; i < 10; i++ {
		_, csr := csrFor(t, "spiffe://"+td+"/ns/default/sa/web")
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := anon.Bootstrap(context.Background(), &meshv1.BootstrapRequest{Token: tok.Secret, Csr: csr, InstanceId: fmt.Sprintf("web-%d", i)})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			} else if status.Code(err) == codes.Unauthenticated {
				losses++
			} else {
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || losses != 9 {
		t.Fatalf("wins=%d losses=%d, want 1 and 9", wins, losses)
	}
	cs, err := m.Operator(t).ListCertificates(ctx(t), &meshv1.ListCertificatesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cs.Certificates {
		if c.IssuedBy == "bootstrap" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d bootstrap certificates recorded, want 1", n)
	}
}

func TestBootstrapRepeatedWithSameKeyReturnsSameSVID(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	tok := m.Token(t, "default", "web", 1)
	anon := meshv1.NewIdentityServiceClient(m.DialAnonymous(t))
	id := "spiffe://" + td + "/ns/default/sa/web"
	key, csr := csrFor(t, id)
	first, err := anon.Bootstrap(ctx(t), &meshv1.BootstrapRequest{Token: tok.Secret, Csr: csr, InstanceId: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	// The reply was "lost": the same key asks again with a new CSR.
	csr2, err := certs.NewCSR(key, spiffeid.RequireFromString(id))
	if err != nil {
		t.Fatal(err)
	}
	second, err := anon.Bootstrap(ctx(t), &meshv1.BootstrapRequest{Token: tok.Secret, Csr: csr2, InstanceId: "web-1"})
	if err != nil {
		t.Fatalf("repeat with the same key: %v", err)
	}
	if string(first.Svid.CertChain[0]) != string(second.Svid.CertChain[0]) {
		t.Fatal("repeat returned a different SVID")
	}
	_, other := csrFor(t, id)
	if _, err := anon.Bootstrap(ctx(t), &meshv1.BootstrapRequest{Token: tok.Secret, Csr: other, InstanceId: "web-2"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("another key with the used token: %v, want Unauthenticated", err)
	}
}

func TestIssuedSVIDShape(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	svid := bootstrap(t, m, "prod", "api")
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://"+td+"/ns/prod/sa/api" {
		t.Errorf("URIs = %v", leaf.URIs)
	}
	if leaf.IsCA || len(leaf.DNSNames) != 0 {
		t.Errorf("IsCA=%v DNSNames=%v", leaf.IsCA, leaf.DNSNames)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got < 59*time.Minute || got > 62*time.Minute {
		t.Errorf("lifetime %s, want about 1h", got)
	}
	renewed, err := meshv1.NewIdentityServiceClient(m.DialAs(t, svid)).Renew(ctx(t), &meshv1.RenewRequest{Csr: func() []byte { _, c := csrFor(t, svid.ID.String()); return c }()})
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if renewed.Svid.SpiffeId != svid.ID.String() || len(renewed.Svid.TrustBundle) != 1 {
		t.Errorf("renewed = %s with %d roots", renewed.Svid.SpiffeId, len(renewed.Svid.TrustBundle))
	}
}

func TestRestartKeepsRootTokensAndCertificates(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	pin := m.RootPin()
	tok := m.Token(t, "default", "web", 3)
	bootstrap(t, m, "default", "api")
	before := snapshot(t, m.Operator(t))

	m = m.Restart(t)
	if m.RootPin() != pin {
		t.Fatalf("root changed across restart: %s -> %s", pin, m.RootPin())
	}
	after := snapshot(t, m.Operator(t))
	if !after.equal(before) {
		t.Fatalf("tokens/certificates changed across restart:\nbefore %v\nafter  %v", before, after)
	}
	// The token made before the restart still works after it.
	_, csr := csrFor(t, "spiffe://"+td+"/ns/default/sa/web")
	if _, err := meshv1.NewIdentityServiceClient(m.DialAnonymous(t)).Bootstrap(ctx(t), &meshv1.BootstrapRequest{Token: tok.Secret, Csr: csr, InstanceId: "web-1"}); err != nil {
		t.Fatalf("bootstrap after restart: %v", err)
	}
}

func TestSecondMeshdOnSameDirFailsFast(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	_, err := controlplane.New(controlplane.Config{DataDir: m.DataDir})
	if err == nil {
		t.Fatal("second meshd on the same data dir started")
	}
	if !strings.Contains(err.Error(), "locked") {
		t.Fatalf("error %q does not say the data file is locked", err)
	}
}

func TestBootstrapIsRateLimitedPerSource(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{BootstrapRate: 0.001, BootstrapBurst: 2})
	anon := meshv1.NewIdentityServiceClient(m.DialAnonymous(t))
	var last error
	for i := 0; i < 3; i++ {
		_, last = anon.Bootstrap(ctx(t), &meshv1.BootstrapRequest{Token: "0123456789ab.0123456789abcdef0123456789abcdef"})
	}
	if status.Code(last) != codes.ResourceExhausted {
		t.Fatalf("third attempt: %v, want ResourceExhausted", last)
	}
	if got := counterSum(t, m, "minimesh_meshd_identity_refused_total"); got < 3 {
		t.Fatalf("refusals counted = %v, want >= 3", got)
	}
}

func counterSum(t *testing.T, m *controlplanetest.Meshd, name string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == name {
			for _, mm := range f.GetMetric() {
				sum += mm.GetCounter().GetValue()
			}
		}
	}
	return sum
}
