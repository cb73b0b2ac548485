package admin

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/certs"
	"minimesh/controlplane/identity"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// Config configures the admin server.
type Config struct {
	Store     *store.Store
	Authority *identity.Authority
	// CAPin is the root CA's pin, returned with every new token.
	CAPin func() string
	// Push answers the sync-status, proxy-config and query calls.
	Push Push
	// CA answers the root-rotation calls.
	CA CA
	// TrustDomain, when set, is the only trust domain DenyIdentity accepts.
	TrustDomain spiffeid.TrustDomain
	// OnChange is called after every committed change of resources.
	OnChange func()
	// Replicas, when set, says the store's kind ("etcd") and how each
	// replica answers, for Version (meshctl check); nil is one bbolt
	// replica.
	Replicas   func() (store string, replicas []*meshv1.ReplicaStatus, leader string)
	Clock      certs.Clock
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Push is what admin needs of the push server.
type Push interface {
	Sync() ([]*meshv1.ProxySync, error)
	Applied(instanceID string) (*meshv1.Snapshot, *meshv1.ProxySync, error)
	Query(ctx context.Context, instanceID string, req *meshv1.Request) (*meshv1.Reply, error)
	ForgetInstance(instanceID string, force bool) (wasConnected bool, err error)
	// Proxies lists the stored proxies, connected as Sync says it.
	Proxies() ([]*meshv1.Proxy, error)
}

// CA is what admin needs of meshd's certificate authority.
type CA interface {
	RotateCA(force bool) (*meshv1.CAStatusResponse, error)
	CAStatus() (*meshv1.CAStatusResponse, error)
}

// Server implements meshv1.AdminServiceServer.
type Server struct {
	meshv1.UnimplementedAdminServiceServer
	cfg     Config
	refused *prometheus.CounterVec
	applies *prometheus.CounterVec // applies.go
}

var _ meshv1.AdminServiceServer = (*Server)(nil)

// New builds the admin server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil || cfg.Authority == nil || cfg.CAPin == nil || cfg.Push == nil || cfg.CA == nil {
		return nil, errors.New("admin: Config.Store, Authority, CAPin, Push and CA are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	s := &Server{cfg: cfg, refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minimesh_meshd_admin_refused_total",
		Help: "Admin requests refused by a handler, by method and gRPC code.",
	}, []string{"method", "code"}), applies: newApplies()}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.refused, s.applies)
	}
	return s, nil
}

// fresh makes the reads that follow linearizable: it waits (at most 5 s)
// until this replica's store cache holds every write committed before the
// call (store.Sync; at once on bbolt), else answers Unavailable.
func (s *Server) fresh(ctx context.Context, method string) error {
	if err := s.cfg.Store.Sync(ctx); err != nil {
		return s.refuse(method, status.Errorf(codes.Unavailable, "%v; try again, or another meshd replica", err))
	}
	return nil
}

// storeStatus is the status of a store error: Unavailable naming etcd
// when etcd is unreachable (store.ErrUnavailable), else Internal.
func storeStatus(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return status.Errorf(codes.Unavailable, "%v; meshd writes nothing until etcd is back: try again", err)
	}
	if errors.Is(err, store.ErrNotLeader) {
		// Only the leader changes what is one for the mesh (the CA's
		// phase): the operator asked a follower, which is not an error
		// of meshd's.
		return status.Errorf(codes.FailedPrecondition, "%v: only the leader does this; `meshctl check` names the leader: point --server at it and try again", err)
	}
	return status.Error(codes.Internal, err.Error())
}

// storeErr is storeStatus, logged and counted as a refusal when etcd is
// unreachable.
func (s *Server) storeErr(method string, err error) error {
	st := storeStatus(err)
	if status.Code(st) == codes.Unavailable {
		return s.refuse(method, st)
	}
	return st
}

// refuse logs and counts a refused request and returns its status error.
func (s *Server) refuse(method string, err error) error {
	st := status.Convert(err)
	s.refused.WithLabelValues(method, st.Code().String()).Inc()
	s.cfg.Logger.Warn("admin request refused", "method", method, "code", st.Code().String(), "error", st.Message())
	return err
}

// CreateJoinToken implements meshv1.AdminServiceServer.
func (s *Server) CreateJoinToken(_ context.Context, req *meshv1.CreateJoinTokenRequest) (*meshv1.CreateJoinTokenResponse, error) {
	tok, secret, err := s.cfg.Authority.CreateToken(identity.TokenRequest{
		Namespace:      req.GetNamespace(),
		ServiceAccount: req.GetServiceAccount(),
		TTL:            req.GetTtl().AsDuration(),
		Uses:           req.GetUses(),
		CAPin:          s.cfg.CAPin(),
	})
	if err != nil {
		return nil, s.refuse("CreateJoinToken", identity.Status(err))
	}
	return &meshv1.CreateJoinTokenResponse{Token: tokenProto(tok, tok.CAPin), Secret: secret, CaPin: tok.CAPin}, nil
}

// ListJoinTokens implements meshv1.AdminServiceServer.
func (s *Server) ListJoinTokens(context.Context, *meshv1.ListJoinTokensRequest) (*meshv1.ListJoinTokensResponse, error) {
	toks, err := s.cfg.Authority.ListTokens()
	if err != nil {
		return nil, s.storeErr("ListJoinTokens", err)
	}
	out := &meshv1.ListJoinTokensResponse{}
	pin := s.cfg.CAPin()
	for _, t := range toks {
		out.Tokens = append(out.Tokens, tokenProto(t, pin))
	}
	return out, nil
}

// RevokeJoinToken implements meshv1.AdminServiceServer.
func (s *Server) RevokeJoinToken(_ context.Context, req *meshv1.RevokeJoinTokenRequest) (*meshv1.RevokeJoinTokenResponse, error) {
	if req.GetId() == "" {
		return nil, s.refuse("RevokeJoinToken", status.Error(codes.InvalidArgument, "id: required"))
	}
	if err := s.cfg.Authority.RevokeToken(req.GetId()); err != nil {
		return nil, s.refuse("RevokeJoinToken", identity.Status(err))
	}
	return &meshv1.RevokeJoinTokenResponse{}, nil
}

// ListCertificates implements meshv1.AdminServiceServer.
func (s *Server) ListCertificates(ctx context.Context, req *meshv1.ListCertificatesRequest) (*meshv1.ListCertificatesResponse, error) {
	if err := s.fresh(ctx, "ListCertificates"); err != nil {
		return nil, err
	}
	certs, err := s.cfg.Authority.ListCertificates(req.GetValidOnly())
	if err != nil {
		return nil, s.storeErr("ListCertificates", err)
	}
	out := &meshv1.ListCertificatesResponse{}
	for _, c := range certs {
		out.Certificates = append(out.Certificates, &meshv1.Certificate{
			SpiffeId:   c.SPIFFEID,
			Serial:     c.Serial,
			NotBefore:  timestamppb.New(c.NotBefore),
			NotAfter:   timestamppb.New(c.NotAfter),
			IssuedBy:   c.IssuedBy,
			TokenId:    c.TokenID,
			InstanceId: c.InstanceID,
		})
	}
	return out, nil
}

// ListProxies implements meshv1.AdminServiceServer.
func (s *Server) ListProxies(ctx context.Context, _ *meshv1.ListProxiesRequest) (*meshv1.ListProxiesResponse, error) {
	if err := s.fresh(ctx, "ListProxies"); err != nil {
		return nil, err
	}
	// Connected as proxy-status says it: a stream on this replica or a
	// presence key, not the stored flag a dead replica leaves set.
	proxies, err := s.cfg.Push.Proxies()
	if err != nil {
		return nil, s.storeErr("ListProxies", err)
	}
	out := &meshv1.ListProxiesResponse{Proxies: proxies}
	return out, nil
}

// tokenProto is t as the API shows it, its pin compared with activePin.
func tokenProto(t *store.Token, activePin string) *meshv1.JoinToken {
	return &meshv1.JoinToken{
		CaPin:          t.CAPin,
		StalePin:       t.CAPin != "" && t.CAPin != activePin,
		Id:             t.ID,
		Namespace:      t.Namespace,
		ServiceAccount: t.ServiceAccount,
		SpiffeId:       t.SPIFFEID,
		CreatedAt:      timestamppb.New(t.CreatedAt),
		ExpiresAt:      timestamppb.New(t.ExpiresAt),
		Uses:           t.Uses,
		UsesLeft:       t.UsesLeft,
		Revoked:        t.Revoked,
	}
}
