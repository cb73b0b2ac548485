package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"minimesh/api"
	"minimesh/certs"
	"minimesh/controlplane/admin"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/identity"
	"minimesh/controlplane/kube"
	"minimesh/controlplane/push"
	"minimesh/controlplane/stats"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

const (
	caMetaKey = "ca"
	// OperatorDir is where the operator credential is written under the data dir.
	OperatorDir = "operator"
	dataFile    = "meshd.db"
	// MaxMessageSize caps every gRPC message meshd receives.
	MaxMessageSize = 4 << 20
)

// Config configures meshd.
type Config struct {
	// DataDir holds the bbolt data file and the operator credential. Required.
	DataDir string
	// ListenAddr is the gRPC address (default 127.0.0.1:15010); Listener,
	// when set, is used instead.
	ListenAddr string
	Listener   net.Listener
	// AdvertiseAddr is where the other replicas reach this one's gRPC
	// (announced under replicas/NAME, for the stats fan-out); default the
	// listener's address unless it is a wildcard.
	AdvertiseAddr string
	// NoStats: meshd does not take traffic stats (it does not announce
	// them to proxies), as a meshd before issue 26; for tests.
	NoStats     bool
	TrustDomain string
	// SVIDTTL is the lifetime of workload SVIDs (default 1h).
	SVIDTTL time.Duration
	// ServingTTL is the lifetime of meshd's own certificate, renewed at
	// half of it (default 24h).
	ServingTTL time.Duration
	// OperatorTTL is the operator credential's lifetime; it is re-issued at
	// start when less than half of it is left (default 30 days).
	OperatorTTL time.Duration
	// CAState, when set, is imported as the CA on first start instead of
	// making a new one (the output of certs.CA.MarshalState: PEM root
	// certificate and key, intermediate certificate and key). Ignored when
	// the data dir already holds a CA.
	CAState []byte
	// CAKeyFile, when set, is a file of exactly 32 random bytes (mode 0600,
	// not a symlink) whose key encrypts the CA state in the data file, and
	// so in every backup (AES-256-GCM; see cakey.go). A data file whose CA
	// is encrypted needs it at every start; a plain one is encrypted at the
	// first start with it.
	CAKeyFile string
	// Etcd, when set, keeps meshd's state in etcd instead of the data
	// dir's bbolt file (--store etcd://...); DataDir then holds only this
	// replica's own files (its operator credential), and CAKeyFile is
	// required: the CA state in etcd is always sealed.
	Etcd *store.EtcdConfig
	// ForgetAfter removes proxies that have been disconnected this long
	// (default 72h; negative keeps them forever).
	ForgetAfter time.Duration
	// EndpointGrace is how long a proxy whose stream ended without a drain
	// (meshd restarted, the network broke) stays an endpoint; a meshd that
	// starts holds the endpoints it last knew as long (default 45s: the
	// agent's longest reconnect backoff, 30s, plus a margin).
	EndpointGrace time.Duration
	// MaxConnectionAge ends every client connection after about this long
	// (gRPC's ±10 % jitter; default 30m), after a GOAWAY and a grace of a
	// tenth of it, at most 30s: proxy streams rebalance over the replicas
	// after a restart, and the proxy, which did not drain, stays an
	// endpoint through the endpoint grace while it reconnects.
	MaxConnectionAge time.Duration
	// RotationCheck is how often a root rotation's progress and the
	// intermediate's age are checked (default 1s).
	RotationCheck time.Duration
	// AckFlush is how often proxies' ACK state is written to the store
	// in one batch, and (etcd) how often other replicas' proxy records
	// are looked for. Default 1s.
	AckFlush time.Duration
	// BootstrapRate and BootstrapBurst limit Bootstrap per source address.
	BootstrapRate  rate.Limit
	BootstrapBurst int
	// Webhook is the mutating admission webhook (webhook.go); off by default.
	Webhook WebhookConfig
	// OperatorSecret keeps an operator credential in a Kubernetes Secret
	// (opsecret.go); off unless its Kube is set.
	OperatorSecret OperatorSecretConfig
	// CRD reconciles the minimesh.io objects (crds.go); off unless its
	// Dynamic is set.
	CRD CRDConfig
	// TokenReviewer reviews Kubernetes service-account tokens presented to
	// Bootstrap and Renew (controlplane/kube); nil: meshd has no API
	// access and only join tokens bootstrap proxies.
	TokenReviewer kube.TokenReviewer
	Clock         certs.Clock
	Logger        *slog.Logger
	Registry      *prometheus.Registry
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("controlplane: Config.DataDir is required")
	}
	if c.ListenAddr == "" {
		c.ListenAddr = "127.0.0.1:15010"
	}
	if c.TrustDomain == "" {
		c.TrustDomain = "minimesh.local"
	}
	if c.SVIDTTL == 0 {
		c.SVIDTTL = certs.DefaultSVIDTTL
	}
	if c.ServingTTL == 0 {
		c.ServingTTL = 24 * time.Hour
	}
	if c.OperatorTTL == 0 {
		c.OperatorTTL = 30 * 24 * time.Hour
	}
	if c.Clock == nil {
		c.Clock = certs.SystemClock
	}
	if c.MaxConnectionAge <= 0 {
		c.MaxConnectionAge = 30 * time.Minute
	}
	if c.RotationCheck <= 0 {
		c.RotationCheck = time.Second
	}
	if c.ForgetAfter == 0 {
		c.ForgetAfter = 72 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return nil
}

// Server is meshd.
type Server struct {
	cfg       Config
	td        spiffeid.TrustDomain
	store     *store.Store
	ca        caHolder
	caKey     *CAKey       // nil: the CA state is stored in clear
	rotateMu  sync.Mutex   // serializes CA changes
	announced time.Time    // when this replica last announced itself (replicastatus.go)
	rep       replicaState // etcd: the stored CA (each replica signs with its own intermediate; replicaca.go)
	authority *identity.Authority
	serving   *certs.SVIDSource
	bundle    *certs.BundleSource
	grpc      *grpc.Server
	push      *push.Server
	refusals  *clientRefusals // handshakes clients aborted: they do not trust meshd's root
	health    *healthState    // grpc.health.v1, /livez, /readyz (health.go)
	stats     *stats.Store    // traffic stats from this replica's proxies (statsrpc.go)
	advertise atomic.Pointer[string]
	opSecret  *opSecret // the operator credential's Secret (opsecret.go); nil: off

	admin *admin.Server // Apply, for the minimesh.io reconciler (crds.go)

	closeOnce sync.Once
}

// New opens the data dir (creating the CA and operator credential on first
// start) and builds the gRPC server. Nothing is served until Run.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("controlplane: trust domain %q: %w", cfg.TrustDomain, err)
	}
	var caKey *CAKey // read first: a refused key file changes nothing
	if cfg.CAKeyFile != "" {
		if caKey, err = ReadCAKeyFile(cfg.CAKeyFile); err != nil {
			return nil, err
		}
	}
	if err := store.CheckDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	var st *store.Store
	if cfg.Etcd != nil {
		if caKey == nil {
			return nil, errors.New("controlplane: --ca-key-file is required with an etcd store: the CA keys are kept in etcd, sealed under it")
		}
		ec := *cfg.Etcd
		if ec.Registerer == nil {
			ec.Registerer = cfg.Registry
		}
		st, err = store.Open(store.Config{Etcd: &ec, Logger: cfg.Logger.With("component", "store")})
	} else {
		st, err = openStore(filepath.Join(cfg.DataDir, dataFile), caKey, td, cfg.Logger)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, td: td, store: st, caKey: caKey, health: newHealth()}
	if err := s.init(); err != nil {
		_ = st.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) init() error {
	cfg := s.cfg
	ca, err := s.loadOrCreateCA()
	if err != nil {
		return err
	}
	if ca, err = s.ownCA(ca); err != nil {
		return err
	}
	s.ca.set(ca)
	s.bundle = certs.NewBundleSource(ca.Bundle())
	s.authority, err = identity.New(identity.Config{Store: s.store, CA: &s.ca, SVIDTTL: cfg.SVIDTTL, Reviewer: cfg.TokenReviewer, Registerer: cfg.Registry, Clock: cfg.Clock, Logger: cfg.Logger.With("component", "identity")})
	if err != nil {
		return err
	}
	if err := s.ensureOperatorCredential(); err != nil {
		return err
	}
	if err := s.registerMetrics(); err != nil {
		return err
	}
	if err := s.initOperatorSecret(); err != nil {
		return err
	}
	s.refusals = newClientRefusals(cfg.Registry, cfg.Logger.With("component", "tls"), cfg.Clock.Now)
	s.serving = certs.NewSVIDSource(cfg.Clock)
	if err := s.rotateServing(); err != nil {
		return err
	}
	if s.stats, err = s.newStats(); err != nil {
		return err
	}
	pushCfg := push.Config{Store: s.store, MayServe: s.mayServe, Bundle: s.bundleDER, EndpointGrace: cfg.EndpointGrace, Tick: cfg.AckFlush, Registerer: cfg.Registry, Clock: cfg.Clock, Logger: cfg.Logger.With("component", "push")}
	if !cfg.NoStats {
		pushCfg.Stats = s.stats.Record
	}
	s.push, err = push.New(pushCfg)
	if err != nil {
		return err
	}
	adminSrv, err := admin.New(admin.Config{Store: s.store, Authority: s.authority, TrustDomain: s.td, CAPin: s.ca.RootPin, Push: s.push, CA: s, OnChange: s.push.Trigger, Replicas: s.replicasFunc(), Clock: cfg.Clock, Logger: cfg.Logger.With("component", "admin"), Registerer: cfg.Registry})
	if err != nil {
		return err
	}
	s.admin = adminSrv
	auth := authn.New(authn.Config{
		TrustDomain: s.td,
		Bundle:      s.bundle,
		Rules:       MethodRules(),
		Revoked:     s.revokedSerial,
		Audited:     AuditedMethods(),
		Clock:       cfg.Clock,
		Logger:      cfg.Logger.With("component", "authn"),
		Registerer:  cfg.Registry,
	})
	idHandler := identity.NewHandler(identity.HandlerConfig{
		Authority:      s.authority,
		BootstrapRate:  cfg.BootstrapRate,
		BootstrapBurst: cfg.BootstrapBurst,
		Clock:          cfg.Clock,
		Logger:         cfg.Logger.With("component", "identity"),
		Registerer:     cfg.Registry,
	})
	s.grpc = grpc.NewServer(
		grpc.Creds(s.refusals.wrap(credentials.NewTLS(certs.OptionalClientServerConfig(s.serving)))),
		grpc.UnaryInterceptor(auth.Unary),
		grpc.StreamInterceptor(auth.Stream),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.MaxConcurrentStreams(1000),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second,
			MaxConnectionAge: cfg.MaxConnectionAge, MaxConnectionAgeGrace: min(cfg.MaxConnectionAge/10, 30*time.Second)}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.WaitForHandlers(true),
		grpc.ForceServerCodecV2(push.Codec()),
	)
	meshv1.RegisterIdentityServiceServer(s.grpc, idHandler)
	meshv1.RegisterAdminServiceServer(s.grpc, statsAdmin{backupHeader{adminSrv, s.caKey != nil}, s.stats})
	meshv1.RegisterReplicaServiceServer(s.grpc, replicaStats{st: s.stats})
	meshv1.RegisterConfigServiceServer(s.grpc, s.push)
	healthpb.RegisterHealthServer(s.grpc, s.health.grpc)
	if err := MethodRules().Check(Services()...); err != nil {
		return err
	}
	return nil
}

// bundleDER is the trust bundle's roots, for snapshots.
func (s *Server) bundleDER() [][]byte {
	var out [][]byte
	for _, c := range s.bundle.Bundle().X509Authorities() {
		out = append(out, c.Raw)
	}
	return out
}

// mayServe decides whether id may register as serving service: the
// Service resource of the identity's namespace names its serving
// identities; without one, the service account must equal the service name.
func (s *Server) mayServe(id spiffeid.ID, service string) error {
	ns, _, err := certs.ParseWorkloadID(id)
	if err != nil {
		return err
	}
	var svc *api.Service
	err = s.store.View(func(r *store.Reader) error {
		o, ok, err := r.Object(api.Key{Kind: api.KindService, Namespace: ns, Name: service})
		if ok {
			svc = o.(*api.Service)
		}
		return err
	})
	if err != nil {
		return err
	}
	if svc == nil {
		return push.SameServiceAccount(id, service)
	}
	for _, p := range svc.Spec.GetServingIdentities() {
		pat, err := api.ParseIdentityPattern(p)
		if err == nil && pat.Match(id.String()) {
			return nil
		}
	}
	return fmt.Errorf("%w: Service %q does not list %s among its serving identities", push.ErrNotAllowed, ns+"/"+service, id)
}

// Services lists every gRPC service meshd serves.
func Services() []grpc.ServiceDesc {
	return []grpc.ServiceDesc{meshv1.IdentityService_ServiceDesc, meshv1.AdminService_ServiceDesc, meshv1.ConfigService_ServiceDesc, meshv1.ReplicaService_ServiceDesc}
}

// MethodRules is who may call each method. A method missing here is
// refused (and New fails, so it cannot ship unnoticed).
func MethodRules() authn.Rules {
	return authn.Rules{
		meshv1.IdentityService_Bootstrap_FullMethodName:     authn.Public,
		meshv1.IdentityService_Renew_FullMethodName:         authn.Workload,
		meshv1.ConfigService_Stream_FullMethodName:          authn.Workload,
		meshv1.AdminService_CreateJoinToken_FullMethodName:  authn.Operator,
		meshv1.AdminService_ListJoinTokens_FullMethodName:   authn.Operator,
		meshv1.AdminService_RevokeJoinToken_FullMethodName:  authn.Operator,
		meshv1.AdminService_ListCertificates_FullMethodName: authn.Operator,
		meshv1.AdminService_ListProxies_FullMethodName:      authn.Operator,
		meshv1.AdminService_Apply_FullMethodName:            authn.Operator,
		meshv1.AdminService_GetResources_FullMethodName:     authn.Operator,
		meshv1.AdminService_DeleteResource_FullMethodName:   authn.Operator,
		meshv1.AdminService_ProxyStatus_FullMethodName:      authn.Operator,
		meshv1.AdminService_ProxyConfig_FullMethodName:      authn.Operator,
		meshv1.AdminService_ProxyQuery_FullMethodName:       authn.Operator,
		meshv1.AdminService_RotateCA_FullMethodName:         authn.Operator,
		meshv1.AdminService_CAStatus_FullMethodName:         authn.Operator,
		meshv1.AdminService_RevokeProxy_FullMethodName:      authn.Operator,
		meshv1.AdminService_DenyIdentity_FullMethodName:     authn.Operator,
		meshv1.AdminService_Backup_FullMethodName:           authn.Operator,
		meshv1.AdminService_RevokeOperator_FullMethodName:   authn.Operator,
		meshv1.AdminService_ListOperators_FullMethodName:    authn.Operator,
		meshv1.AdminService_ForgetProxy_FullMethodName:      authn.Operator,
		meshv1.AdminService_Version_FullMethodName:          authn.Operator,
		meshv1.AdminService_Stats_FullMethodName:            authn.Operator,
		meshv1.ReplicaService_LocalStats_FullMethodName:     authn.Meshd,
		healthpb.Health_Check_FullMethodName:                authn.Public, // health.go; Watch is refused
		healthpb.Health_List_FullMethodName:                 authn.Public,
	}
}

func (s *Server) loadOrCreateCA() (*certs.CA, error) {
	caCfg := certs.CAConfig{TrustDomain: s.td, Clock: s.cfg.Clock, SVIDTTL: s.cfg.SVIDTTL}
	ca, sealed, err := loadCA(s.store, s.caKey, caCfg)
	if err != nil && s.cfg.Etcd != nil {
		return nil, s.sharedCAError(err)
	}
	if err != nil {
		return nil, fmt.Errorf("controlplane: stored CA: %w", err)
	}
	if ca != nil && s.caKey != nil && !sealed && s.cfg.Etcd != nil {
		// Only a restore could have put a plain CA into etcd (it seals
		// it); seal it now. etcd keeps the plain value in its history
		// until the next compaction.
		v, err := caStateValue(s.caKey, ca)
		if err != nil {
			return nil, err
		}
		if err := s.store.Update(func(tx *store.Txn) error { return tx.SetMeta(caMetaKey, v) }); err != nil {
			return nil, err
		}
		s.cfg.Logger.Warn("sealed the CA state found in clear in etcd; compact etcd to drop the plain value from its history", "ca_key_id", s.caKeyID())
		sealed = true
	}
	if ca != nil {
		if s.caKey != nil && !sealed { // openStore sealed it; nothing else writes it
			return nil, errors.New("controlplane: stored CA: still in clear after encrypting it")
		}
		s.cfg.Logger.Info("loaded the certificate authority", "encrypted", sealed, "ca_key_id", s.caKeyID(), "root_pin", ca.RootPin())
		return ca, nil
	}
	if s.cfg.CAState != nil {
		ca, err = certs.LoadCA(caCfg, s.cfg.CAState)
		if err != nil {
			return nil, fmt.Errorf("controlplane: imported CA: %w", err)
		}
	} else if ca, err = certs.NewCA(caCfg); err != nil {
		return nil, err
	}
	if created, err := createCA(s.store, s.caKey, ca); err != nil {
		return nil, err
	} else if !created { // another replica created one first: use it
		if ca, _, err = loadCA(s.store, s.caKey, caCfg); err != nil || ca == nil {
			return nil, fmt.Errorf("controlplane: stored CA (another replica's): %v", err)
		}
		return ca, nil
	}
	s.cfg.Logger.Info("created a new certificate authority", "trust_domain", s.td.String(), "root_pin", ca.RootPin(), "encrypted", s.caKey != nil, "ca_key_id", s.caKeyID())
	return ca, nil
}

// ensureOperatorCredential writes DIR/operator/ when it is missing, from
// another root, past half its life, or revoked.
func (s *Server) ensureOperatorCredential() error { return s.operatorCredential(false) }

// operatorCredential (re)writes the operator credential when needed, or
// always with force. Each file is replaced atomically, so meshctl never
// finds one missing.
func (s *Server) operatorCredential(force bool) error {
	dir := filepath.Join(s.cfg.DataDir, OperatorDir)
	if svid, _, err := certs.LoadSVID(dir, s.td); err == nil && !force {
		leaf := svid.Certificates[0]
		half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		_, _, verr := certs.VerifyPeerCertificates(svid.Certificates, s.ca.Bundle(), s.cfg.Clock.Now())
		// After a root rotation the credential must chain to the active root.
		if verr == nil && len(svid.Certificates) > 1 && !svid.Certificates[len(svid.Certificates)-1].Equal(s.ca.get().Intermediate()) {
			verr = errors.New("issued by another intermediate")
		}
		// A revoked one is replaced: meshd's own data dir is where the
		// operator gets a fresh credential after revoking theirs.
		if verr == nil && s.revokedSerial(authn.Serial(leaf)) {
			verr = errors.New("revoked")
		}
		if verr == nil && svid.ID == certs.OperatorID(s.td) && s.cfg.Clock.Now().Before(half) {
			return nil
		}
	}
	where := admin.IssuedAtStart
	if force {
		where = admin.IssuedAtRotation
	}
	ca := s.ca.get()
	svid, err := ca.IssueSVID(certs.OperatorID(s.td), s.cfg.OperatorTTL)
	if err != nil {
		return err
	}
	// Recorded before it is written, so every credential on disk can be
	// listed and revoked.
	if err := recordOperator(s.store, svid.Certificates[0], svid.ID, where, ca.RootPin()); err != nil {
		return err
	}
	if err := writeOperatorFiles(dir, svid, ca.Bundle()); err != nil {
		return err
	}
	s.cfg.Logger.Info("wrote operator credential", "dir", dir, "spiffe_id", svid.ID.String(), "serial", authn.Serial(svid.Certificates[0]), "issued_by", where, "expires", svid.Certificates[0].NotAfter)
	return nil
}

func (s *Server) rotateServing() error {
	svid, err := s.ca.get().IssueServingSVID(certs.MeshdID(s.td), s.cfg.ServingTTL)
	if err != nil {
		return err
	}
	s.serving.Set(svid)
	return nil
}

// Run serves until ctx is cancelled, then stops gracefully (bounded) and
// closes the store.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	lis := s.cfg.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", s.cfg.ListenAddr); err != nil {
			return fmt.Errorf("controlplane: listen: %w", err)
		}
	}
	var whErr chan error // nil: no webhook
	if s.cfg.Webhook.enabled() {
		wh, err := s.newWebhook()
		if err != nil {
			_ = lis.Close()
			return err
		}
		whErr = make(chan error, 1)
		whCtx, stopWh := context.WithCancel(context.Background())
		whDone := make(chan struct{})
		go func() { defer close(whDone); whErr <- wh.Run(whCtx) }()
		defer func() { stopWh(); <-whDone }()
	}
	if a := s.advertiseFor(lis.Addr()); a != "" {
		s.advertise.Store(&a)
	}
	s.cfg.Logger.Info("meshd serving", "addr", lis.Addr().String(), "trust_domain", s.td.String(), "root_pin", s.ca.RootPin())
	caTick := time.NewTicker(s.cfg.RotationCheck)
	defer caTick.Stop()
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	s.health.serving()
	defer s.health.stopping()
	pushCtx, stopPush := context.WithCancel(context.Background())
	pushDone := make(chan struct{})
	go func() { defer close(pushDone); _ = s.push.Run(pushCtx) }()
	defer func() { stopPush(); <-pushDone }()
	// Renewals issued while etcd is unreachable are recorded when it is back.
	recCtx, stopRec := context.WithCancel(context.Background())
	recDone := make(chan struct{})
	go func() { defer close(recDone); s.authority.RunRecorder(recCtx) }()
	defer func() { stopRec(); <-recDone }()
	// The operator credential in its Kubernetes Secret (leader only).
	opCtx, stopOp := context.WithCancel(context.Background())
	opDone := make(chan struct{})
	go func() { defer close(opDone); s.runOperatorSecret(opCtx) }()
	defer func() { stopOp(); <-opDone }()

	// The minimesh.io objects: every replica watches, the leader applies.
	crdCtx, stopCRD := context.WithCancel(context.Background())
	crdDone := make(chan struct{})
	go func() { defer close(crdDone); s.runCRDs(crdCtx) }()
	defer func() { stopCRD(); <-crdDone }()

	// The singletons below run on the leader only (on bbolt the one
	// process always is); their writes are fenced on the election key.
	leadCtx, stopLead := context.WithCancel(context.Background())
	leadDone := make(chan struct{})
	go func() { defer close(leadDone); _ = s.store.Campaign(leadCtx) }()
	defer func() {
		stopLead()
		// etcd's Election.Campaign, cancelled, resigns with its client's
		// own context: with etcd unreachable that waits until the store
		// closes (deferred above), so meshd would never exit. Wait a
		// little, then let close end it.
		select {
		case <-leadDone:
		case <-time.After(2 * time.Second):
			s.cfg.Logger.Warn("leader election did not end (etcd unreachable?); closing the store ends it")
		}
	}()

	rotate := time.NewTimer(s.servingRefreshIn())
	defer rotate.Stop()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("controlplane: serve: %w", err)
		case err := <-whErr:
			s.grpc.Stop()
			return fmt.Errorf("controlplane: %w", err)
		case <-caTick.C:
			// Its cache lag and a heartbeat in replicas/NAME.
			s.announce()
			if err := s.refreshCA(); err != nil { // every replica: its own intermediate, a changed stored CA
				s.cfg.Logger.Error("could not refresh this replica's certificate authority", "error", err)
			}
			if !s.store.IsLeader() {
				continue
			}
			if err := s.maintainIntermediates(); err != nil {
				s.cfg.Logger.Warn("could not maintain the replicas' intermediates", "error", err)
			}
			s.authority.PruneIfDue() // expired certificate, revocation and issuance records
			if err := s.advanceCA(false); err != nil {
				s.cfg.Logger.Error("certificate authority maintenance failed", "error", err)
			}
			if s.cfg.ForgetAfter > 0 {
				if err := s.push.Forget(s.cfg.Clock.Now().Add(-s.cfg.ForgetAfter)); err != nil {
					s.cfg.Logger.Warn("could not forget stale proxies", "error", err)
				}
			}
		case <-rotate.C:
			if err := s.rotateServing(); err != nil {
				s.cfg.Logger.Error("could not rotate meshd's serving certificate", "error", err)
			}
			rotate.Reset(s.servingRefreshIn())
		case <-ctx.Done():
			s.health.stopping() // NOT_SERVING before the streams end
			s.retireOwn()
			s.push.Shutdown()
			stopped := make(chan struct{})
			go func() { s.grpc.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				s.grpc.Stop()
				<-stopped
			}
			return nil
		}
	}
}

func (s *Server) servingRefreshIn() time.Duration {
	svid := s.serving.Current()
	leaf := svid.Certificates[0]
	d := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2).Sub(s.cfg.Clock.Now())
	if d < time.Second {
		d = time.Second
	}
	return d
}

func (s *Server) close() {
	s.closeOnce.Do(func() {
		if err := s.store.Close(); err != nil {
			s.cfg.Logger.Warn("closing store", "error", err)
		}
	})
}

// Close releases the store when Run is never called.
func (s *Server) Close() { s.close() }

// RootPin is the pin of the CA's root public key.
func (s *Server) RootPin() string { return s.ca.RootPin() }

// TrustDomain is the mesh's trust domain.
func (s *Server) TrustDomain() spiffeid.TrustDomain { return s.td }

// OperatorCredentialDir is where meshctl's credential is.
func (s *Server) OperatorCredentialDir() string { return filepath.Join(s.cfg.DataDir, OperatorDir) }

// Authority is the identity authority (tests and embedding).
func (s *Server) Authority() *identity.Authority { return s.authority }

// CA is the certificate authority.
func (s *Server) CA() *certs.CA { return s.ca.get() }
