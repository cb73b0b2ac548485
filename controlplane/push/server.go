package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// MayServe decides whether id may serve service.
type MayServe func(id spiffeid.ID, service string) error

// SameServiceAccount is the default MayServe: an identity serves the service
// named like its service account (the Kubernetes convention), until Service
// resources say otherwise.
func SameServiceAccount(id spiffeid.ID, service string) error {
	_, sa, err := certs.ParseWorkloadID(id)
	if err != nil {
		return err
	}
	if sa != service {
		return fmt.Errorf("%w: %s serves service %q, not %q", ErrNotAllowed, id, sa, service)
	}
	return nil
}

// Config configures the stream server.
type Config struct {
	Store    *store.Store
	MayServe MayServe // default SameServiceAccount
	// HelloTimeout bounds the wait for the first message. Default 10s.
	HelloTimeout time.Duration
	Clock        certs.Clock
	Logger       *slog.Logger
}

// Server implements meshv1.ConfigServiceServer.
type Server struct {
	meshv1.UnimplementedConfigServiceServer
	cfg Config

	mu       sync.Mutex
	active   map[string]*session // by instance ID
	shutdown bool
}

var _ meshv1.ConfigServiceServer = (*Server)(nil)

type session struct {
	cancel context.CancelFunc
}

// New builds the server and marks every stored proxy disconnected: a meshd
// that just started holds no streams.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("push: Config.Store is required")
	}
	if cfg.MayServe == nil {
		cfg.MayServe = SameServiceAccount
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	err := cfg.Store.Update(func(tx *store.Txn) error {
		recs, err := tx.List(store.TableProxies, "id")
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if p := *rec.(*store.Proxy); p.Connected {
				p.Connected = false
				if err := tx.Put(store.TableProxies, &p); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, active: map[string]*session{}}, nil
}

var (
	instanceIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	serviceRe    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

func validateHello(h *meshv1.Hello) error {
	if !instanceIDRe.MatchString(h.GetInstanceId()) {
		return fmt.Errorf("%w: instance_id: must be 1-63 lowercase letters, digits or '-'", ErrBadHello)
	}
	if !serviceRe.MatchString(h.GetService()) {
		return fmt.Errorf("%w: service: must be a DNS label", ErrBadHello)
	}
	if _, port, err := net.SplitHostPort(h.GetAdvertiseAddress()); err != nil || port == "" {
		return fmt.Errorf("%w: advertise_address: must be host:port", ErrBadHello)
	}
	if len(h.GetProxyVersion()) > 64 {
		return fmt.Errorf("%w: proxy_version: longer than 64 characters", ErrBadHello)
	}
	return nil
}

// Stream implements meshv1.ConfigServiceServer.
func (s *Server) Stream(stream meshv1.ConfigService_StreamServer) error {
	caller, ok := authn.CallerFrom(stream.Context())
	if !ok || caller.ID.IsZero() {
		return status.Error(codes.Unauthenticated, "stream needs a valid SVID")
	}
	hello, err := s.recvHello(stream)
	if err != nil {
		s.cfg.Logger.Warn("registration refused", "caller", caller.ID.String(), "peer", caller.Addr, "error", err)
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	sess := &session{cancel: cancel}
	if err := s.register(caller, hello, sess); err != nil {
		s.cfg.Logger.Warn("registration refused", "caller", caller.ID.String(), "instance_id", hello.GetInstanceId(), "service", hello.GetService(), "error", err)
		return err
	}
	s.cfg.Logger.Info("proxy registered", "instance_id", hello.GetInstanceId(), "spiffe_id", caller.ID.String(), "service", hello.GetService(), "address", hello.GetAdvertiseAddress(), "version", hello.GetProxyVersion())
	defer s.unregister(hello.GetInstanceId(), sess)

	if err := stream.Send(&meshv1.StreamResponse{Message: &meshv1.StreamResponse_Registered{Registered: &meshv1.Registered{SpiffeId: caller.ID.String()}}}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				recvErr <- err
				return
			}
		}
	}()
	select {
	case <-ctx.Done():
		if stream.Context().Err() == nil {
			return status.Error(codes.Unavailable, "stream closed by meshd (shutdown, or replaced by a newer stream for the same instance)")
		}
		return nil
	case <-recvErr:
		// The proxy closed the stream or the connection broke.
		return nil
	}
}

func (s *Server) recvHello(stream meshv1.ConfigService_StreamServer) (*meshv1.Hello, error) {
	type result struct {
		msg *meshv1.StreamRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		ch <- result{m, err}
	}()
	timer := time.NewTimer(s.cfg.HelloTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		h := r.msg.GetHello()
		if h == nil {
			return nil, status.Error(codes.InvalidArgument, "the first message must be a hello")
		}
		if err := validateHello(h); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return h, nil
	case <-timer.C:
		// Returning ends the stream, which unblocks the Recv goroutine.
		return nil, status.Error(codes.DeadlineExceeded, "no hello received in time")
	}
}

func (s *Server) register(caller authn.Caller, h *meshv1.Hello, sess *session) error {
	if err := s.cfg.MayServe(caller.ID, h.GetService()); err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	now := s.cfg.Clock.Now()
	err := s.cfg.Store.Update(func(tx *store.Txn) error {
		p := &store.Proxy{InstanceID: h.GetInstanceId()}
		if rec, err := tx.Get(store.TableProxies, h.GetInstanceId()); err == nil {
			prev := rec.(*store.Proxy)
			if prev.SPIFFEID != caller.ID.String() {
				return status.Errorf(codes.PermissionDenied, "instance %s is registered to another identity", h.GetInstanceId())
			}
			cp := *prev
			p = &cp
		}
		p.SPIFFEID = caller.ID.String()
		p.Service = h.GetService()
		p.Address = h.GetAdvertiseAddress()
		p.Version = h.GetProxyVersion()
		p.Connected = true
		p.ConnectedAt = now
		p.LastSeen = now
		if caller.Leaf != nil && caller.Leaf.NotAfter.After(p.SVIDExpiresAt) {
			p.SVIDExpiresAt = caller.Leaf.NotAfter
		}
		return tx.Put(store.TableProxies, p)
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "meshd is shutting down")
	}
	if old, ok := s.active[h.GetInstanceId()]; ok {
		old.cancel()
	}
	s.active[h.GetInstanceId()] = sess
	s.mu.Unlock()
	return nil
}

// Shutdown ends every stream (each marks its proxy disconnected) and
// refuses new ones, so a graceful gRPC stop does not wait on streams that
// would otherwise live forever.
func (s *Server) Shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shutdown = true
	for _, sess := range s.active {
		sess.cancel()
	}
}

func (s *Server) unregister(instanceID string, sess *session) {
	s.mu.Lock()
	mine := false
	if cur, ok := s.active[instanceID]; ok && cur == sess {
		delete(s.active, instanceID)
		mine = true
	}
	s.mu.Unlock()
	if !mine {
		return // a newer stream for this instance took over
	}
	now := s.cfg.Clock.Now()
	err := s.cfg.Store.Update(func(tx *store.Txn) error {
		rec, err := tx.Get(store.TableProxies, instanceID)
		if err != nil {
			return err
		}
		p := *rec.(*store.Proxy)
		p.Connected = false
		p.LastSeen = now
		return tx.Put(store.TableProxies, &p)
	})
	if err != nil {
		s.cfg.Logger.Warn("could not record proxy disconnect", "instance_id", instanceID, "error", err)
	}
	s.cfg.Logger.Info("proxy disconnected", "instance_id", instanceID)
}
