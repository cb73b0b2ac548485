package admin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/controlplane/push"
	"minimesh/controlplane/store"
	"minimesh/internal/version"
	meshv1 "minimesh/proto/mesh/v1"
)

// ForgetProxy implements meshv1.AdminServiceServer: a dead instance stops
// holding a root rotation now rather than after --forget-after.
func (s *Server) ForgetProxy(_ context.Context, req *meshv1.ForgetProxyRequest) (*meshv1.ForgetProxyResponse, error) {
	id := req.GetInstanceId()
	if id == "" {
		return nil, s.refuse("ForgetProxy", status.Error(codes.InvalidArgument, "instance_id: required"))
	}
	was, err := s.cfg.Push.ForgetInstance(id, req.GetForce())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, s.refuse("ForgetProxy", status.Errorf(codes.NotFound, "instance_id: no proxy instance %q", id))
	case errors.Is(err, push.ErrConnected), errors.Is(err, push.ErrRevokedRecord):
		return nil, s.refuse("ForgetProxy", status.Error(codes.FailedPrecondition, err.Error()))
	case err != nil:
		return nil, s.storeErr("ForgetProxy", err)
	}
	return &meshv1.ForgetProxyResponse{WasConnected: was}, nil
}

// Version implements meshv1.AdminServiceServer.
func (s *Server) Version(context.Context, *meshv1.VersionRequest) (*meshv1.VersionResponse, error) {
	out := &meshv1.VersionResponse{Version: version.Version, Store: "bbolt", TrustDomain: s.cfg.TrustDomain.Name()}
	if s.cfg.Replicas != nil {
		out.Store, out.Replicas, out.Leader = s.cfg.Replicas()
	}
	return out, nil
}
