package admin

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"minimesh/certs"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// Where an operator credential was issued, as its certificate record's
// IssuedBy says.
const (
	// IssuedAtStart: written to <data-dir>/operator by meshd at start.
	IssuedAtStart = "operator:meshd-start"
	// IssuedAtRotation: re-issued there when a new root was activated.
	IssuedAtRotation = "operator:rotation"
	// IssuedOffline: `meshd operator issue`, meshd stopped.
	IssuedOffline = "operator:offline"
)

// maxSerialHex is the longest serial RFC 5280 allows (20 octets).
const maxSerialHex = 40

// NormalizeSerial turns a certificate serial as a person may copy it
// (openssl's upper case, colons, a 0x prefix, leading zeros) into the form
// meshd records: lowercase hex, big.Int.Text(16).
func NormalizeSerial(s string) (string, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimPrefix(t, "0x")
	t = strings.ReplaceAll(t, ":", "")
	if t == "" {
		return "", errors.New("serial: required (the credential's certificate serial in hex; meshctl operator list shows it)")
	}
	if len(t) > maxSerialHex {
		return "", fmt.Errorf("serial: %d hex digits, more than a certificate serial's %d", len(t), maxSerialHex)
	}
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || n.Sign() < 0 {
		return "", fmt.Errorf("serial: %q is not hexadecimal", s)
	}
	return n.Text(16), nil
}

// IsOperator reports whether a recorded SPIFFE ID is the operator identity
// (of its own trust domain).
func IsOperator(spiffeID string) bool {
	id, err := spiffeid.FromString(spiffeID)
	return err == nil && id == certs.OperatorID(id.TrustDomain())
}

// Revoked reports whether the certificate with this serial (lowercase hex)
// is revoked. A store error counts as revoked: the check fails closed.
func Revoked(r *store.Reader, serial string) bool {
	_, err := r.Get(store.TableRevocations, serial)
	return !errors.Is(err, store.ErrNotFound)
}

// operatorCredentials lists the operator certificates recorded, newest
// first, with their revocations; expired ones only with all.
func operatorCredentials(r *store.Reader, now time.Time, all bool) ([]*meshv1.OperatorCredential, error) {
	recs, err := r.List(store.TableCertificates, "id")
	if err != nil {
		return nil, err
	}
	type entry struct {
		oc     *meshv1.OperatorCredential
		before time.Time
	}
	var es []entry
	for _, rec := range recs {
		c := rec.(*store.Certificate)
		if !IsOperator(c.SPIFFEID) || (!all && !now.Before(c.NotAfter)) {
			continue
		}
		oc := &meshv1.OperatorCredential{
			Serial:    c.Serial,
			NotBefore: timestamppb.New(c.NotBefore),
			NotAfter:  timestamppb.New(c.NotAfter),
			IssuedBy:  c.IssuedBy,
		}
		if rv, err := r.Get(store.TableRevocations, c.Serial); err == nil {
			v := rv.(*store.Revocation)
			oc.Revoked, oc.RevokedAt, oc.RevokeReason = true, timestamppb.New(v.CreatedAt), v.Reason
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		es = append(es, entry{oc, c.NotBefore})
	}
	sort.Slice(es, func(a, b int) bool {
		if !es[a].before.Equal(es[b].before) {
			return es[a].before.After(es[b].before)
		}
		return es[a].oc.Serial < es[b].oc.Serial
	})
	out := make([]*meshv1.OperatorCredential, len(es))
	for i, e := range es {
		out[i] = e.oc
	}
	return out, nil
}

// OperatorRevocation is one request to revoke an operator credential.
type OperatorRevocation struct {
	Serial string
	Force  bool
	Reason string
	Now    time.Time
}

// RevokeOperator adds an operator credential's serial to the revoked set,
// for the AdminService and for `meshd operator revoke` (meshd stopped).
// Errors are gRPC statuses: InvalidArgument for a malformed serial or one
// that is not an operator credential's, NotFound for a serial meshd never
// recorded, FailedPrecondition for the last valid credential without
// Force. Revoking a revoked serial changes nothing and says so
// (already_revoked).
func RevokeOperator(st *store.Store, req OperatorRevocation) (*meshv1.RevokeOperatorResponse, error) {
	serial, err := NormalizeSerial(req.Serial)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.Reason == "" {
		req.Reason = "operator revoke"
	}
	resp := &meshv1.RevokeOperatorResponse{}
	err = st.Update(func(tx *store.Txn) error {
		resp.Operator, resp.AlreadyRevoked, resp.Remaining = nil, false, 0
		rec, err := tx.Get(store.TableCertificates, serial)
		if errors.Is(err, store.ErrNotFound) {
			return status.Errorf(codes.NotFound, "serial: no certificate %s was issued by this meshd (meshctl operator list shows the operator credentials)", serial)
		}
		if err != nil {
			return err
		}
		c := rec.(*store.Certificate)
		if !IsOperator(c.SPIFFEID) {
			return status.Errorf(codes.InvalidArgument, "serial: certificate %s is %s's, not an operator credential; revoke a proxy with meshctl proxy revoke, an identity with meshctl identity deny", serial, c.SPIFFEID)
		}
		creds, err := operatorCredentials(&tx.Reader, req.Now, true)
		if err != nil {
			return err
		}
		var target *meshv1.OperatorCredential
		var others uint32
		for _, oc := range creds {
			valid := !oc.Revoked && req.Now.Before(oc.NotAfter.AsTime())
			if oc.Serial == serial {
				target = oc
			} else if valid {
				others++
			}
		}
		resp.Operator, resp.Remaining = target, others
		if target.Revoked {
			resp.AlreadyRevoked = true
			return nil
		}
		if req.Now.Before(c.NotAfter) {
			if others == 0 && !req.Force {
				return status.Errorf(codes.FailedPrecondition, "serial: %s is the last valid operator credential; revoking it locks every operator out until `meshd operator issue --out DIR` is run with meshd stopped (or meshd restarts and writes a new one to <data-dir>/operator); pass --force to revoke it anyway", serial)
			}
		}
		rv := &store.Revocation{Serial: serial, SPIFFEID: c.SPIFFEID, NotAfter: c.NotAfter, CreatedAt: req.Now, Reason: req.Reason}
		target.Revoked, target.RevokedAt, target.RevokeReason = true, timestamppb.New(rv.CreatedAt), rv.Reason
		return tx.Put(store.TableRevocations, rv)
	})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, storeStatus(err)
	}
	return resp, nil
}

// RevokeOperator implements meshv1.AdminServiceServer.
func (s *Server) RevokeOperator(ctx context.Context, req *meshv1.RevokeOperatorRequest) (*meshv1.RevokeOperatorResponse, error) {
	resp, err := RevokeOperator(s.cfg.Store, OperatorRevocation{Serial: req.GetSerial(), Force: req.GetForce(), Reason: req.GetReason(), Now: s.cfg.Clock.Now()})
	if err != nil {
		if status.Code(err) == codes.Internal {
			return nil, err
		}
		return nil, s.refuse("RevokeOperator", err)
	}
	if c, ok := authn.CallerFrom(ctx); ok && c.Leaf != nil && c.Leaf.SerialNumber.Text(16) == resp.GetOperator().GetSerial() {
		resp.Operator.Caller = true
	}
	if !resp.GetAlreadyRevoked() {
		s.cfg.Logger.Warn("operator credential revoked", "serial", resp.GetOperator().GetSerial(), "issued_by", resp.GetOperator().GetIssuedBy(), "remaining", resp.GetRemaining(), "force", req.GetForce())
	}
	return resp, nil
}

// ListOperators implements meshv1.AdminServiceServer.
func (s *Server) ListOperators(ctx context.Context, req *meshv1.ListOperatorsRequest) (*meshv1.ListOperatorsResponse, error) {
	var out []*meshv1.OperatorCredential
	err := s.cfg.Store.View(func(r *store.Reader) error {
		var err error
		out, err = operatorCredentials(r, s.cfg.Clock.Now(), req.GetIncludeExpired())
		return err
	})
	if err != nil {
		return nil, s.storeErr("ListOperators", err)
	}
	if c, ok := authn.CallerFrom(ctx); ok && c.Leaf != nil {
		mine := c.Leaf.SerialNumber.Text(16)
		for _, oc := range out {
			oc.Caller = oc.Serial == mine
		}
	}
	return &meshv1.ListOperatorsResponse{Operators: out}, nil
}
