package authn

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"minimesh/certs"
)

// Rule says who may call a method.
type Rule int

const (
	// Deny refuses every caller. It is the rule of any method not listed.
	Deny Rule = iota
	// Public needs no client certificate (Bootstrap only).
	Public
	// Workload needs a valid X509-SVID of the trust domain that is not one
	// of meshd's reserved identities.
	Workload
	// Operator needs the operator identity's X509-SVID.
	Operator
	// Meshd needs meshd's own X509-SVID: replicas asking each other
	// (ReplicaService).
	Meshd
)

func (r Rule) String() string {
	switch r {
	case Public:
		return "public"
	case Workload:
		return "workload"
	case Operator:
		return "operator"
	case Meshd:
		return "meshd"
	default:
		return "deny"
	}
}

// Rules maps a full gRPC method name to its rule.
type Rules map[string]Rule

// Config configures an Authenticator.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// Bundle verifies client certificates; read at every call so a new
	// bundle applies at once.
	Bundle x509bundle.Source
	Rules  Rules
	// Revoked reports whether the certificate with this serial (lowercase
	// hex, as big.Int.Text(16) writes it) is revoked. It is asked on every
	// call that presents a certificate, so it must be cheap (a memdb read);
	// nil revokes nothing. Operator credentials all share one SPIFFE ID:
	// their serial is what revokes one.
	Revoked func(serial string) bool
	// Audited names the methods whose every call (allowed and refused by
	// the handler alike) is logged with the caller's certificate serial and
	// SPIFFE ID: the state-changing ones. A request that says it is a dry
	// run (GetDryRun() true) is not logged.
	Audited map[string]bool
	Clock   certs.Clock
	Logger  *slog.Logger
	// Registerer receives the refusal counter; nil registers nowhere.
	Registerer prometheus.Registerer
}

// Authenticator holds the interceptors.
type Authenticator struct {
	cfg     Config
	refused *prometheus.CounterVec
}

// New builds an Authenticator.
func New(cfg Config) *Authenticator {
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Authenticator{
		cfg: cfg,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_meshd_auth_refused_total",
			Help: "gRPC calls refused before reaching a handler, by method and reason.",
		}, []string{"method", "reason"}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(a.refused)
	}
	return a
}

// Caller is the authenticated client of a call.
type Caller struct {
	// ID is zero for Public calls made without a certificate.
	ID   spiffeid.ID
	Leaf *x509.Certificate
	// Addr is the client's network address.
	Addr string
}

type callerKey struct{}

// CallerFrom returns the caller that the interceptor put in ctx.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Serial is the certificate's serial as meshd records it: lowercase hex.
func Serial(c *x509.Certificate) string {
	if c == nil || c.SerialNumber == nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

// Unary is the unary server interceptor.
func (a *Authenticator) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if !a.audited(info.FullMethod, req) {
		return handler(ctx, req)
	}
	resp, err := handler(ctx, req)
	a.audit(ctx, info.FullMethod, err)
	return resp, err
}

// Stream is the stream server interceptor.
func (a *Authenticator) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	err = handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	if a.audited(info.FullMethod, nil) {
		a.audit(ctx, info.FullMethod, err)
	}
	return err
}

type dryRunner interface{ GetDryRun() bool }

func (a *Authenticator) audited(method string, req any) bool {
	if !a.cfg.Audited[method] {
		return false
	}
	d, ok := req.(dryRunner)
	return !ok || !d.GetDryRun()
}

// audit writes the audit record of one state-changing call, after its
// handler returned: who (serial and SPIFFE ID of the verified client
// certificate), from where, what, and how it ended.
func (a *Authenticator) audit(ctx context.Context, method string, err error) {
	c, _ := CallerFrom(ctx)
	attrs := []any{"method", method, "caller", idString(c.ID), "serial", Serial(c.Leaf), "peer", c.Addr, "code", status.Code(err).String()}
	if err != nil {
		attrs = append(attrs, "error", status.Convert(err).Message())
	}
	a.cfg.Logger.Info("audit", attrs...)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// Authenticate checks the caller of method and returns ctx with the Caller.
// The error is a gRPC status.
func (a *Authenticator) authenticate(ctx context.Context, method string) (context.Context, error) {
	caller, rule, reason, err := a.check(ctx, method)
	if err != nil {
		a.refused.WithLabelValues(method, reason).Inc()
		a.cfg.Logger.Warn("refused call", "method", method, "rule", rule.String(), "peer", caller.Addr, "caller", idString(caller.ID), "serial", Serial(caller.Leaf), "reason", reason, "error", err)
		return nil, err
	}
	return context.WithValue(ctx, callerKey{}, caller), nil
}

func (a *Authenticator) check(ctx context.Context, method string) (Caller, Rule, string, error) {
	var caller Caller
	p, ok := peer.FromContext(ctx)
	if ok && p.Addr != nil {
		caller.Addr = p.Addr.String()
	}
	rule := a.cfg.Rules[method]
	if rule == Deny {
		return caller, rule, "no_rule", status.Errorf(codes.PermissionDenied, "method %s is not allowed", method)
	}
	var raw [][]byte
	if ok {
		if ti, isTLS := p.AuthInfo.(credentials.TLSInfo); isTLS {
			for _, c := range ti.State.PeerCertificates {
				raw = append(raw, c.Raw)
			}
		}
	}
	if rule == Public {
		return caller, rule, "", nil
	}
	if len(raw) == 0 {
		return caller, rule, "no_certificate", status.Error(codes.Unauthenticated, "a client certificate (X509-SVID) is required")
	}
	id, chain, err := certs.VerifyPeer(raw, a.cfg.Bundle, a.cfg.Clock.Now())
	if err != nil {
		return caller, rule, "bad_certificate", status.Errorf(codes.Unauthenticated, "client certificate refused: %v%s", err, a.unknownRootHint(err))
	}
	caller.ID, caller.Leaf = id, chain[0]
	if id.TrustDomain() != a.cfg.TrustDomain {
		return caller, rule, "wrong_trust_domain", status.Errorf(codes.Unauthenticated, "client identity %s is not in trust domain %s", id, a.cfg.TrustDomain)
	}
	// A certificate revoked by its serial is refused whatever the rule:
	// the revoked set is read at every call, so a revocation applies to the
	// next call, on connections already open too.
	if a.cfg.Revoked != nil && a.cfg.Revoked(Serial(caller.Leaf)) {
		return caller, rule, "revoked_certificate", status.Errorf(codes.Unauthenticated, "client certificate %s (serial %s) is revoked", id, Serial(caller.Leaf))
	}
	switch rule {
	case Operator:
		if id != certs.OperatorID(a.cfg.TrustDomain) {
			return caller, rule, "not_operator", status.Errorf(codes.PermissionDenied, "%s needs the operator identity; %s is not it", method, id)
		}
	case Meshd:
		if id != certs.MeshdID(a.cfg.TrustDomain) {
			return caller, rule, "not_meshd", status.Errorf(codes.PermissionDenied, "%s is for meshd replicas only; %s is not meshd", method, id)
		}
	case Workload:
		if certs.IsReserved(id) {
			return caller, rule, "reserved_identity", status.Errorf(codes.PermissionDenied, "%s is for workloads; %s is reserved", method, id)
		}
	}
	return caller, rule, "", nil
}

// unknownRootHint explains a certificate of no root of meshd's bundle: a
// credential issued before a root rotation, or by another meshd's CA.
func (a *Authenticator) unknownRootHint(err error) string {
	if !strings.Contains(err.Error(), "unknown authority") {
		return ""
	}
	var pins []string
	if b, berr := a.cfg.Bundle.GetX509BundleForTrustDomain(a.cfg.TrustDomain); berr == nil {
		for _, r := range b.X509Authorities() {
			pins = append(pins, certs.SPKIPin(r))
		}
	}
	return fmt.Sprintf("; it chains to no root of this meshd's bundle (%s): it was issued before a root rotation (or by another meshd's CA); get a fresh one: an operator copies <data-dir>/operator again or runs `meshd operator issue`, a proxy needs a new join token", strings.Join(pins, ", "))
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// Check reports whether rules cover every method of the given services, so
// a new method cannot slip in without a rule.
func (r Rules) Check(services ...grpc.ServiceDesc) error {
	var errs []error
	for _, sd := range services {
		for _, m := range sd.Methods {
			if r[fmt.Sprintf("/%s/%s", sd.ServiceName, m.MethodName)] == Deny {
				errs = append(errs, fmt.Errorf("authn: no rule for /%s/%s", sd.ServiceName, m.MethodName))
			}
		}
		for _, s := range sd.Streams {
			if r[fmt.Sprintf("/%s/%s", sd.ServiceName, s.StreamName)] == Deny {
				errs = append(errs, fmt.Errorf("authn: no rule for /%s/%s", sd.ServiceName, s.StreamName))
			}
		}
	}
	return errors.Join(errs...)
}
