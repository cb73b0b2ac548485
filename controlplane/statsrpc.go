package controlplane

import (
	"context"
	"encoding/json"
	"net"
	"sort"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"minimesh/certs"
	"minimesh/controlplane/stats"
	meshv1 "minimesh/proto/mesh/v1"
)

// Traffic stats (issue 26): the push server hands each proxy's report to
// s.stats (controlplane/stats), AdminService.Stats answers from it and the
// other replicas', and ReplicaService.LocalStats is how replicas ask each
// other (rule authn.Meshd: only meshd's own identity).

// newStats builds this replica's stats store; on etcd it asks the other
// live replicas at the address each announces under replicas/NAME.
func (s *Server) newStats() (*stats.Store, error) {
	cfg := stats.Config{Clock: s.cfg.Clock, Logger: s.cfg.Logger.With("component", "stats"), Registerer: s.cfg.Registry}
	if s.perReplicaCA() {
		cfg.Peers, cfg.Ask = s.statsPeers, s.askReplica
	}
	return stats.New(cfg)
}

// statsPeers lists the other live replicas with their announced address.
func (s *Server) statsPeers(ctx context.Context) ([]stats.Peer, error) {
	live, err := s.store.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	var out []stats.Peer
	for name, v := range live {
		if name == s.store.Replica() {
			continue
		}
		var info ReplicaInfo
		_ = json.Unmarshal([]byte(v), &info) // an older replica's value: no address
		out = append(out, stats.Peer{Name: name, Addr: info.Address})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// askReplica calls another replica's LocalStats over mTLS, as meshd, and
// accepts only meshd's identity on the other side.
func (s *Server) askReplica(ctx context.Context, p stats.Peer, req *meshv1.StatsRequest) (*meshv1.StatsResponse, error) {
	tc := certs.MTLSClientConfig(s.serving, s.bundle, certs.AuthorizeID(certs.MeshdID(s.td)), certs.TLSOptions{Clock: s.cfg.Clock})
	conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	r, err := meshv1.NewReplicaServiceClient(conn).LocalStats(ctx, &meshv1.LocalStatsRequest{Query: req})
	if err != nil {
		return nil, err
	}
	return r.GetAnswer(), nil
}

// statsAdmin adds Stats to the AdminService.
type statsAdmin struct {
	meshv1.AdminServiceServer
	st *stats.Store
}

func (a statsAdmin) Stats(ctx context.Context, req *meshv1.StatsRequest) (*meshv1.StatsResponse, error) {
	return a.st.Stats(ctx, req)
}

// replicaStats is the ReplicaService.
type replicaStats struct {
	meshv1.UnimplementedReplicaServiceServer
	st *stats.Store
}

func (r replicaStats) LocalStats(_ context.Context, req *meshv1.LocalStatsRequest) (*meshv1.LocalStatsResponse, error) {
	a, err := r.st.Local(req.GetQuery())
	if err != nil {
		return nil, err
	}
	return &meshv1.LocalStatsResponse{Answer: a}, nil
}

// advertiseFor is the address other replicas reach this one at:
// Config.AdvertiseAddr, else the listener's when it is a specific address
// (a wildcard one is not dialable: set --advertise-address).
func (s *Server) advertiseFor(a net.Addr) string {
	if s.cfg.AdvertiseAddr != "" {
		return s.cfg.AdvertiseAddr
	}
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.IP == nil || ta.IP.IsUnspecified() {
		return ""
	}
	return ta.String()
}

// ServingSVID is meshd's own current SVID (its serving certificate and
// client credential towards the other replicas), for tests that call
// ReplicaService as meshd.
func (s *Server) ServingSVID() *x509svid.SVID { return s.serving.Current() }
