package admin

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"minimesh/api"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// MaxApplyObjects caps the resources of one Apply.
const MaxApplyObjects = 1000

var errDryRun = errors.New("admin: dry run")

// Apply implements meshv1.AdminServiceServer: all or nothing, one revision.
// It refuses to change an object applied from Kubernetes (store.Source).
func (s *Server) Apply(ctx context.Context, req *meshv1.ApplyRequest) (resp *meshv1.ApplyResponse, err error) {
	return s.ApplyFrom(ctx, req, store.SourceMeshctl)
}

// ApplyFrom is Apply on behalf of source (store.SourceMeshctl or
// store.SourceKubernetes, meshd's CRD reconciler and validating webhook):
// the same validation and reference checks; an object stored from another
// source is refused (FailedPrecondition) and the objects are stored with
// source.
func (s *Server) ApplyFrom(_ context.Context, req *meshv1.ApplyRequest, source string) (resp *meshv1.ApplyResponse, err error) {
	defer func() { s.countApply(req, resp, err) }()
	objs, err := decodeAll(req.GetResources())
	if err != nil {
		return nil, s.refuse("Apply", status.Error(codes.InvalidArgument, err.Error()))
	}
	if len(objs) > store.MaxApplyObjects || applySize(req) > store.MaxApplyBytes {
		return nil, s.refuse("Apply", status.Errorf(codes.InvalidArgument,
			"resources: %d objects of %d bytes; an Apply takes at most %d objects and %d bytes (etcd's transaction limits, kept on every store): split it into several applies",
			len(objs), applySize(req), store.MaxApplyObjects, store.MaxApplyBytes))
	}
	resp = &meshv1.ApplyResponse{}
	err = s.cfg.Store.Update(func(tx *store.Txn) error {
		resp.Results, resp.Revision = nil, 0 // fn may run again (an etcd conflict)
		if err := api.ValidateReferences(objs, tx.Lookup()); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		var changed []api.Object
		for _, o := range objs {
			k := api.KeyOf(o)
			action := "created"
			prev, ok, err := tx.Object(k)
			if err != nil {
				return err
			}
			if ok {
				if err := sameSource(tx, k, source); err != nil {
					return err
				}
				action = "configured"
				if proto.Equal(prev.SpecMessage(), o.SpecMessage()) {
					action = "unchanged"
				}
			}
			if action != "unchanged" {
				changed = append(changed, o)
			}
			resp.Results = append(resp.Results, &meshv1.ApplyResult{Kind: string(k.Kind), Namespace: k.Namespace, Name: k.Name, Action: action})
		}
		if req.GetDryRun() {
			return errDryRun
		}
		if len(changed) == 0 {
			return nil
		}
		rev, err := tx.Bump()
		if err != nil {
			return err
		}
		now := s.cfg.Clock.Now()
		for _, o := range changed {
			if err := tx.PutObjectFrom(o, rev, now, source); err != nil {
				return err
			}
		}
		resp.Revision = rev
		return nil
	})
	if err != nil && !errors.Is(err, errDryRun) {
		if _, ok := status.FromError(err); ok {
			return nil, s.refuse("Apply", err)
		}
		return nil, s.storeErr("Apply", err)
	}
	if resp.Revision == 0 {
		resp.Revision, _ = s.cfg.Store.Revision()
	}
	if !req.GetDryRun() {
		s.cfg.Logger.Info("applied resources", "revision", resp.Revision, "count", len(objs))
		s.changed()
	}
	return resp, nil
}

// applySize is the encoded size of an Apply's resources.
func applySize(req *meshv1.ApplyRequest) int {
	n := 0
	for _, r := range req.GetResources() {
		n += proto.Size(r)
	}
	return n
}

// decodeAll converts and validates every resource; an object may appear once.
func decodeAll(rs []*meshv1.Resource) ([]api.Object, error) {
	if len(rs) == 0 {
		return nil, errors.New("resources: at least one is required")
	}
	if len(rs) > MaxApplyObjects {
		return nil, fmt.Errorf("resources: at most %d per apply, got %d", MaxApplyObjects, len(rs))
	}
	seen := map[api.Key]int{}
	objs := make([]api.Object, 0, len(rs))
	var errs []error
	for i, r := range rs {
		o, err := api.FromProto(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("resources[%d]: %w", i, err))
			continue
		}
		if err := o.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("resources[%d]: %w", i, err))
			continue
		}
		k := api.KeyOf(o)
		if j, dup := seen[k]; dup {
			errs = append(errs, fmt.Errorf("resources[%d]: %s is also resources[%d]", i, k, j))
			continue
		}
		seen[k] = i
		objs = append(objs, o)
	}
	return objs, errors.Join(errs...)
}

// GetResources implements meshv1.AdminServiceServer.
func (s *Server) GetResources(ctx context.Context, req *meshv1.GetResourcesRequest) (*meshv1.GetResourcesResponse, error) {
	if err := s.fresh(ctx, "GetResources"); err != nil {
		return nil, err
	}
	var kind api.Kind
	if req.GetKind() != "" {
		k, err := api.ParseKind(req.GetKind())
		if err != nil {
			return nil, s.refuse("GetResources", status.Error(codes.InvalidArgument, err.Error()))
		}
		kind = k
	}
	if req.GetName() != "" && kind == "" {
		return nil, s.refuse("GetResources", status.Error(codes.InvalidArgument, "name: needs a kind"))
	}
	resp := &meshv1.GetResourcesResponse{}
	err := s.cfg.Store.View(func(r *store.Reader) error {
		if req.GetName() != "" {
			ns := req.GetNamespace()
			if ns == "" {
				ns = "default"
			}
			o, ok, err := r.Object(api.Key{Kind: kind, Namespace: ns, Name: req.GetName()})
			if err != nil {
				return err
			}
			if !ok {
				return status.Errorf(codes.NotFound, "%s %q not found", kind, ns+"/"+req.GetName())
			}
			resp.Resources = append(resp.Resources, api.ToProto(o))
			return nil
		}
		objs, err := r.Objects(kind, req.GetNamespace())
		for _, o := range objs {
			resp.Resources = append(resp.Resources, api.ToProto(o))
		}
		return err
	})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, s.refuse("GetResources", err)
		}
		return nil, s.storeErr("GetResources", err)
	}
	resp.Revision, _ = s.cfg.Store.Revision()
	return resp, nil
}

// sameSource refuses a change of k, stored by another source than source.
func sameSource(tx *store.Txn, k api.Key, source string) error {
	have, ok, err := tx.ObjectSource(k)
	if err != nil || !ok || have == source {
		return err
	}
	if have == store.SourceKubernetes {
		return status.Errorf(codes.FailedPrecondition, "%s is applied from Kubernetes (a minimesh.io %s object): change or delete it with kubectl, not meshctl", k, k.Kind)
	}
	return status.Errorf(codes.FailedPrecondition, "%s was applied by meshctl apply (%s): delete it with meshctl delete before Kubernetes may own it", k, OwnedByMeshctl)
}

// OwnedByMeshctl is the reason a Kubernetes object is refused that would
// change a resource applied by meshctl.
const OwnedByMeshctl = "OwnedByMeshctl"

// DeleteResource implements meshv1.AdminServiceServer. It refuses to delete
// an object applied from Kubernetes.
func (s *Server) DeleteResource(ctx context.Context, req *meshv1.DeleteResourceRequest) (*meshv1.DeleteResourceResponse, error) {
	return s.DeleteResourceFrom(ctx, req, store.SourceMeshctl)
}

// DeleteResourceFrom is DeleteResource on behalf of source: an object
// stored from another source is refused (FailedPrecondition), and so is
// an object still referred to.
func (s *Server) DeleteResourceFrom(_ context.Context, req *meshv1.DeleteResourceRequest, source string) (*meshv1.DeleteResourceResponse, error) {
	kind, err := api.ParseKind(req.GetKind())
	if err != nil {
		return nil, s.refuse("DeleteResource", status.Error(codes.InvalidArgument, err.Error()))
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	k := api.Key{Kind: kind, Namespace: ns, Name: req.GetName()}
	resp := &meshv1.DeleteResourceResponse{}
	err = s.cfg.Store.Update(func(tx *store.Txn) error {
		if _, ok, err := tx.Object(k); err != nil {
			return err
		} else if !ok {
			return status.Errorf(codes.NotFound, "%s not found", k)
		}
		if err := sameSource(tx, k, source); err != nil {
			return err
		}
		if err := tx.DeleteObject(k); err != nil {
			return err
		}
		rest, err := tx.Objects("", "")
		if err != nil {
			return err
		}
		if err := api.ValidateReferences(rest, api.NewIndex(rest...)); err != nil {
			return status.Errorf(codes.FailedPrecondition, "%s is still referred to: %v", k, err)
		}
		rev, err := tx.Bump()
		resp.Revision = rev
		return err
	})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, s.refuse("DeleteResource", err)
		}
		return nil, s.storeErr("DeleteResource", err)
	}
	s.cfg.Logger.Info("deleted resource", "resource", k.String(), "revision", resp.Revision)
	s.changed()
	return resp, nil
}

func (s *Server) changed() {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange()
	}
}
