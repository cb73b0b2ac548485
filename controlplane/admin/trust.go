package admin

import (
	"context"
	"errors"
	"io"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// RotateCA implements meshv1.AdminServiceServer.
func (s *Server) RotateCA(_ context.Context, req *meshv1.RotateCARequest) (*meshv1.RotateCAResponse, error) {
	st, err := s.cfg.CA.RotateCA(req.GetForce())
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, s.refuse("RotateCA", err)
		}
		return nil, s.storeErr("RotateCA", err)
	}
	s.cfg.Logger.Info("root rotation requested", "force", req.GetForce(), "phase", st.GetPhase())
	return &meshv1.RotateCAResponse{Status: st}, nil
}

// CAStatus implements meshv1.AdminServiceServer.
func (s *Server) CAStatus(ctx context.Context, _ *meshv1.CAStatusRequest) (*meshv1.CAStatusResponse, error) {
	if err := s.fresh(ctx, "CAStatus"); err != nil {
		return nil, err
	}
	st, err := s.cfg.CA.CAStatus()
	if err != nil {
		return nil, s.storeErr("CAStatus", err)
	}
	toks, err := s.cfg.Authority.ListTokens()
	if err != nil {
		return nil, s.storeErr("CAStatus", err)
	}
	now := s.cfg.Clock.Now()
	for _, t := range toks {
		usable := !t.Revoked && t.UsesLeft > 0 && now.Before(t.ExpiresAt)
		if usable && t.CAPin != "" && t.CAPin != st.GetActive().GetPin() {
			st.StaleTokens++
		}
	}
	return st, nil
}

// RevokeProxy implements meshv1.AdminServiceServer.
func (s *Server) RevokeProxy(_ context.Context, req *meshv1.RevokeProxyRequest) (*meshv1.RevokeProxyResponse, error) {
	err := s.cfg.Store.Update(func(tx *store.Txn) error {
		rec, err := tx.Get(store.TableProxies, req.GetInstanceId())
		if errors.Is(err, store.ErrNotFound) {
			return status.Errorf(codes.NotFound, "no proxy instance %q", req.GetInstanceId())
		}
		if err != nil {
			return err
		}
		p := *rec.(*store.Proxy)
		p.Revoked = true
		return tx.Put(store.TableProxies, &p)
	})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, s.refuse("RevokeProxy", err)
		}
		return nil, s.storeErr("RevokeProxy", err)
	}
	s.cfg.Logger.Warn("proxy instance revoked", "instance_id", req.GetInstanceId())
	s.changed()
	return &meshv1.RevokeProxyResponse{}, nil
}

// DenyIdentity implements meshv1.AdminServiceServer.
func (s *Server) DenyIdentity(_ context.Context, req *meshv1.DenyIdentityRequest) (*meshv1.DenyIdentityResponse, error) {
	id, err := spiffeid.FromString(req.GetSpiffeId())
	if err != nil {
		return nil, s.refuse("DenyIdentity", status.Errorf(codes.InvalidArgument, "spiffe_id: %v", err))
	}
	// Every operator credential carries the one operator identity, and
	// meshd's own certificate is no workload's: denying either would look
	// done and change nothing (authn never consults denials for them).
	if certs.IsReserved(id) {
		return nil, s.refuse("DenyIdentity", status.Errorf(codes.InvalidArgument,
			"spiffe_id: %s is a reserved identity and cannot be denied; revoke an operator credential by its serial with `meshctl operator revoke SERIAL` (meshctl operator list shows them)", id))
	}
	if td := s.cfg.TrustDomain; !td.IsZero() && id.TrustDomain() != td {
		return nil, s.refuse("DenyIdentity", status.Errorf(codes.InvalidArgument, "spiffe_id: %s is not of trust domain %s; no certificate of this mesh carries it", id, td))
	}
	if _, _, err := certs.ParseWorkloadID(id); err != nil {
		return nil, s.refuse("DenyIdentity", status.Errorf(codes.InvalidArgument, "spiffe_id: %v; no workload certificate carries it", err))
	}
	err = s.cfg.Store.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableDenials, &store.Denial{SPIFFEID: id.String(), CreatedAt: s.cfg.Clock.Now()})
	})
	if err != nil {
		return nil, s.storeErr("DenyIdentity", err)
	}
	s.cfg.Logger.Warn("identity denied", "spiffe_id", id.String())
	s.changed()
	return &meshv1.DenyIdentityResponse{}, nil
}

// Backup implements meshv1.AdminServiceServer: the store in the
// backend-neutral backup format (store.Backup), from one consistent (and,
// on etcd, linearizable) snapshot, streamed in chunks.
func (s *Server) Backup(_ *meshv1.BackupRequest, stream meshv1.AdminService_BackupServer) error {
	if err := s.fresh(stream.Context(), "Backup"); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := s.cfg.Store.Backup(pw)
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	buf := make([]byte, 256<<10)
	for {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			if serr := stream.Send(&meshv1.BackupResponse{Chunk: buf[:n]}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "backup: %v", err)
		}
	}
}
