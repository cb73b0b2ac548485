package admin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/controlplane/push"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// ProxyStatus implements meshv1.AdminServiceServer.
func (s *Server) ProxyStatus(ctx context.Context, _ *meshv1.ProxyStatusRequest) (*meshv1.ProxyStatusResponse, error) {
	if err := s.fresh(ctx, "ProxyStatus"); err != nil {
		return nil, err
	}
	ps, err := s.cfg.Push.Sync()
	if err != nil {
		return nil, s.storeErr("ProxyStatus", err)
	}
	return &meshv1.ProxyStatusResponse{Proxies: ps}, nil
}

// ProxyConfig implements meshv1.AdminServiceServer.
func (s *Server) ProxyConfig(_ context.Context, req *meshv1.ProxyConfigRequest) (*meshv1.ProxyConfigResponse, error) {
	snap, st, err := s.cfg.Push.Applied(req.GetInstanceId())
	if errors.Is(err, store.ErrNotFound) {
		return nil, s.refuse("ProxyConfig", status.Errorf(codes.NotFound, "no proxy instance %q", req.GetInstanceId()))
	}
	if err != nil {
		return nil, s.storeErr("ProxyConfig", err)
	}
	return &meshv1.ProxyConfigResponse{Applied: snap, Status: st}, nil
}

// ProxyQuery implements meshv1.AdminServiceServer.
func (s *Server) ProxyQuery(ctx context.Context, req *meshv1.ProxyQueryRequest) (*meshv1.ProxyQueryResponse, error) {
	if req.GetRequest() == nil || req.GetRequest().GetQuery() == nil {
		return nil, s.refuse("ProxyQuery", status.Error(codes.InvalidArgument, "request: a query is required"))
	}
	reply, err := s.cfg.Push.Query(ctx, req.GetInstanceId(), req.GetRequest())
	switch {
	case errors.Is(err, push.ErrNotConnected):
		return nil, s.refuse("ProxyQuery", status.Error(codes.Unavailable, err.Error()))
	case err != nil:
		return nil, s.refuse("ProxyQuery", status.Error(codes.DeadlineExceeded, err.Error()))
	case reply.GetError() != "":
		return nil, s.refuse("ProxyQuery", status.Error(codes.FailedPrecondition, reply.GetError()))
	}
	return &meshv1.ProxyQueryResponse{Json: reply.GetJson()}, nil
}
