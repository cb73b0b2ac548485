package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/certs"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/kube"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// HandlerConfig configures the gRPC handler.
type HandlerConfig struct {
	Authority *Authority
	// BootstrapRate and BootstrapBurst limit Bootstrap attempts per source
	// IP. Defaults: 1/s, burst 10.
	BootstrapRate  rate.Limit
	BootstrapBurst int
	// MaxSources bounds the per-source limiter table (LRU). Default 4096.
	MaxSources int
	Clock      certs.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Handler implements meshv1.IdentityServiceServer.
type Handler struct {
	meshv1.UnimplementedIdentityServiceServer
	cfg HandlerConfig

	mu       sync.Mutex
	limiters *lru.LRU

	issued  *prometheus.CounterVec
	refused *prometheus.CounterVec
}

var _ meshv1.IdentityServiceServer = (*Handler)(nil)

// NewHandler builds the handler.
func NewHandler(cfg HandlerConfig) *Handler {
	if cfg.BootstrapRate == 0 {
		cfg.BootstrapRate = 1
	}
	if cfg.BootstrapBurst == 0 {
		cfg.BootstrapBurst = 10
	}
	if cfg.MaxSources == 0 {
		cfg.MaxSources = 4096
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l, _ := lru.NewLRU(cfg.MaxSources, nil)
	h := &Handler{
		cfg:      cfg,
		limiters: l,
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_meshd_svids_issued_total",
			Help: "X509-SVIDs issued, by method.",
		}, []string{"method"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_meshd_identity_refused_total",
			Help: "Bootstrap and Renew requests refused, by method and reason.",
		}, []string{"method", "reason"}),
	}
	// Both methods' series exist from the start: a rate over them (and a
	// dashboard's issued vs refused) has data before the first issuance.
	h.issued.WithLabelValues("bootstrap")
	h.issued.WithLabelValues("renew")
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(h.issued, h.refused)
	}
	return h
}

// Bootstrap implements meshv1.IdentityServiceServer.
func (h *Handler) Bootstrap(ctx context.Context, req *meshv1.BootstrapRequest) (*meshv1.BootstrapResponse, error) {
	caller, _ := authn.CallerFrom(ctx)
	if wait := h.allow(caller.Addr); wait > 0 {
		return nil, h.refuse("bootstrap", caller, "rate_limited", retryStatus(fmt.Sprintf("too many bootstrap attempts from this address; retry in %s", wait.Round(time.Millisecond)), wait))
	}
	var (
		issued *Issued
		err    error
	)
	switch {
	case req.GetToken() != "" && req.GetK8SServiceAccountToken() != "":
		err = fmt.Errorf("%w: token and k8s_service_account_token: give one credential, not both", ErrBadRequest)
	case req.GetK8SServiceAccountToken() != "":
		issued, err = h.cfg.Authority.BootstrapSAToken(ctx, req.GetK8SServiceAccountToken(), req.GetCsr(), req.GetInstanceId())
	default:
		issued, err = h.cfg.Authority.Bootstrap(req.GetToken(), req.GetCsr(), req.GetInstanceId())
	}
	if err != nil {
		reason, st := toStatus(err)
		return nil, h.refuse("bootstrap", caller, reason, st)
	}
	h.issued.WithLabelValues("bootstrap").Inc()
	return &meshv1.BootstrapResponse{Svid: toProto(issued)}, nil
}

// Renew implements meshv1.IdentityServiceServer.
func (h *Handler) Renew(ctx context.Context, req *meshv1.RenewRequest) (*meshv1.RenewResponse, error) {
	caller, ok := authn.CallerFrom(ctx)
	if !ok || caller.ID.IsZero() {
		return nil, h.refuse("renew", caller, "no_identity", status.Error(codes.Unauthenticated, "renew needs a valid SVID as client certificate"))
	}
	issued, err := h.cfg.Authority.RenewWithToken(ctx, caller.ID, caller.Leaf, req.GetCsr(), req.GetInstanceId(), req.GetK8SServiceAccountToken())
	if err != nil {
		reason, st := toStatus(err)
		return nil, h.refuse("renew", caller, reason, st)
	}
	h.issued.WithLabelValues("renew").Inc()
	return &meshv1.RenewResponse{Svid: toProto(issued)}, nil
}

func (h *Handler) refuse(method string, caller authn.Caller, reason string, err error) error {
	h.refused.WithLabelValues(method, reason).Inc()
	attrs := []any{"method", method, "peer", caller.Addr, "reason", reason, "error", err}
	if !caller.ID.IsZero() {
		attrs = append(attrs, "caller", caller.ID.String())
	}
	if caller.Leaf != nil {
		attrs = append(attrs, "serial", caller.Leaf.SerialNumber.Text(16))
		if inst := certs.InstanceID(caller.Leaf); inst != "" {
			attrs = append(attrs, "instance_id", inst)
		}
	}
	h.cfg.Logger.Warn("identity request refused", attrs...)
	return err
}

// allow applies the per-source-address Bootstrap limit: 0, or how long to
// wait before the next attempt.
func (h *Handler) allow(addr string) time.Duration {
	host := hostOf(addr)
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.limiters.Get(host)
	if !ok {
		v = rate.NewLimiter(h.cfg.BootstrapRate, h.cfg.BootstrapBurst)
		h.limiters.Add(host, v)
	}
	return delay(v.(*rate.Limiter).ReserveN(h.cfg.Clock.Now(), 1), h.cfg.Clock.Now())
}

// retryStatus is ResourceExhausted carrying the delay as RetryInfo, which
// mesh-proxy's agent honours (RetryDelay).
func retryStatus(msg string, wait time.Duration) error {
	st := status.New(codes.ResourceExhausted, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		st = d
	}
	return st.Err()
}

// RetryDelay is the RetryInfo delay of a gRPC status error (false when it
// carries none).
func RetryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

func hostOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[:i]
		}
	}
	return addr
}

// toStatus maps the package's errors to gRPC statuses and a metric reason.
func toStatus(err error) (string, error) {
	switch {
	case errors.Is(err, ErrTokenMalformed):
		return "token_malformed", status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrTokenInvalid):
		return "token_invalid", status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrTokenExpired):
		return "token_expired", status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrTokenRevoked):
		return "token_revoked", status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrTokenUsedUp):
		return "token_used_up", status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, kube.ErrUnavailable):
		return "kube_unavailable", status.Error(codes.Unavailable, err.Error()+"; meshd fails closed: try again when the Kubernetes API answers")
	case errors.Is(err, ErrNoKubeAPI):
		return "kube_api_off", status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, kube.ErrUnauthenticated):
		return "sa_token_unauthenticated", status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, kube.ErrNotPod):
		return "sa_token_not_pod", status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrPodMismatch):
		return "sa_token_other_pod", status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrSATokenRequired):
		return "sa_token_missing", status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, ErrRevoked):
		return "revoked", status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrReservedIdentity):
		return "reserved_identity", status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrCSR):
		return "csr", status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrBadRequest):
		return "bad_request", status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrUnbound):
		return "unbound", status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrRateLimited):
		var rl *RateLimitedError
		if errors.As(err, &rl) {
			return "rate_limited", retryStatus(err.Error(), rl.RetryAfter)
		}
		return "rate_limited", status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, ErrNotFound):
		return "not_found", status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrUnavailable):
		return "etcd_unavailable", status.Error(codes.Unavailable, err.Error()+"; try again when etcd is back")
	default:
		return "internal", status.Error(codes.Internal, "internal error")
	}
}

// Status maps an Authority error to a gRPC status error; for other handlers.
func Status(err error) error {
	_, st := toStatus(err)
	return st
}

func toProto(is *Issued) *meshv1.X509SVID {
	out := &meshv1.X509SVID{
		SpiffeId:  is.ID.String(),
		ExpiresAt: timestamppb.New(is.Chain[0].NotAfter),
	}
	for _, c := range is.Chain {
		out.CertChain = append(out.CertChain, c.Raw)
	}
	out.TrustBundle = rawChain(is.Bundle.X509Authorities())
	return out
}
