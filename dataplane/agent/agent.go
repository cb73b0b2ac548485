package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/internal/fsguard"
	"minimesh/internal/replicas"
	meshv1 "minimesh/proto/mesh/v1"
)

// Config configures an Agent.
type Config struct {
	// ControlPlane is meshd's host:port, or a comma-separated list of its
	// replicas' (a DNS name with several addresses works too): every call
	// and the stream go to one that answers (internal/replicas). Required.
	ControlPlane string
	// TrustDomain of the mesh. Default minimesh.local.
	TrustDomain spiffeid.TrustDomain
	// Token is the join token "<id>.<secret>"; needed only to bootstrap.
	Token string
	// CAPin ("sha256:<hex>", or a comma-separated list of them: any one
	// matching suffices) authenticates meshd before the agent holds a
	// trust bundle. Required with Token and SATokenFile.
	CAPin string
	// SATokenFile is a Kubernetes projected service-account token (audience
	// minimesh) to bootstrap with instead of a join token. It is read at
	// every use, never kept or logged: presented in Bootstrap and, for an
	// SVID meshd issued on it, with every Renew. meshd names the instance
	// (the pod's name and UID).
	SATokenFile string
	// Namespace and ServiceAccount name the identity to bootstrap
	// (spiffe://<td>/ns/<ns>/sa/<sa>); they must match the token's binding.
	// Defaults: "default" and Service.
	Namespace      string
	ServiceAccount string
	// Service, Advertise and Version are sent in the registration Hello.
	Service   string
	Advertise string
	Version   string
	// EndpointScope, sent in the Hello too, names the services whose
	// endpoints the proxy needs; nil asks for every endpoint.
	EndpointScope *meshv1.EndpointScope
	// StateDir keeps the key, SVID, bundle and instance ID. Required.
	StateDir string
	// CallTimeout bounds each call to meshd. Default 10s.
	CallTimeout time.Duration
	// BackoffMin and BackoffMax bound the retry delay. Defaults 500ms, 30s.
	BackoffMin, BackoffMax time.Duration
	// Applier applies snapshots from meshd; nil accepts them as they come.
	Applier Applier
	// Querier answers operator requests; nil refuses them.
	Querier Querier
	// Stats makes the traffic report sent over the stream every
	// StatsInterval (default 10s), only to a meshd whose Registered
	// names "stats"; nil sends none.
	Stats         func() *meshv1.StatsReport
	StatsInterval time.Duration
	Clock         certs.Clock
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// Agent keeps the proxy's identity and its registration with meshd.
type Agent struct {
	cfg        Config
	instanceID string   // guarded by mu once Run starts (see instance)
	pins       []string // of cfg.CAPin
	svid       *certs.SVIDSource
	bundle     *certs.BundleSource

	mu        sync.Mutex
	lastErr   error     // last renewal/bootstrap failure
	renewAt   time.Time // next planned renewal
	notReady  error     // a reason that overrides the SVID check (token used up)
	connected bool      // registration stream up
	rotated   chan struct{}

	// bundleMu orders the trust bundle's writers: a snapshot's bundle
	// always applies and counts in bundleGen; a Renew or Bootstrap reply's
	// bundle applies only if no snapshot bundle came in since the request
	// was sent (see takeReplyBundle).
	bundleMu  sync.Mutex
	bundleGen uint64

	applied atomic.Pointer[meshv1.Snapshot]
	files   []*meshv1.FileStatus // of the applied snapshot; touched by the stream goroutine only

	renewals  *prometheus.CounterVec
	snapshots *prometheus.CounterVec
	refused   *prometheus.CounterVec // state files not used: not written by this proxy
	expiry    prometheus.GaugeFunc   // the SVID's NotAfter
	rootsExp  prometheus.GaugeFunc   // the trust bundle's first root to expire
}

// New loads the state dir. It never talks to meshd: Run does.
func New(cfg Config) (*Agent, error) {
	if cfg.ControlPlane == "" || cfg.StateDir == "" || cfg.Service == "" {
		return nil, errors.New("agent: Config.ControlPlane, StateDir and Service are required")
	}
	if _, err := replicas.Parse("agent: Config.ControlPlane (--control-plane)", cfg.ControlPlane); err != nil {
		return nil, err
	}
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("minimesh.local")
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.ServiceAccount == "" {
		cfg.ServiceAccount = cfg.Service
	}
	if _, err := certs.WorkloadID(cfg.TrustDomain, cfg.Namespace, cfg.ServiceAccount); err != nil {
		return nil, fmt.Errorf("agent: identity: %w", err)
	}
	if cfg.Token != "" && cfg.SATokenFile != "" {
		return nil, errors.New("agent: a join token (--token) and a service-account token file (--sa-token-file): give one")
	}
	if cfg.Token != "" && cfg.CAPin == "" {
		return nil, errors.New("agent: a join token needs the CA pin (--ca-pin) to authenticate meshd")
	}
	if cfg.SATokenFile != "" && cfg.CAPin == "" {
		return nil, errors.New("agent: a service-account token needs the CA pin (--ca-pin) to authenticate meshd before it is sent")
	}
	var pins []string
	if cfg.CAPin != "" {
		var err error
		if pins, err = certs.ParsePins(cfg.CAPin); err != nil {
			return nil, fmt.Errorf("agent: ca pin: %w", err)
		}
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = 10 * time.Second
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 500 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = certs.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// The state dir must be ours (see openStateDir); made 0700 if missing.
	id, err := loadOrCreateInstanceID(cfg.StateDir, cfg.Service)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:        cfg,
		instanceID: id,
		pins:       pins,
		svid:       certs.NewSVIDSource(cfg.Clock),
		bundle:     certs.NewBundleSource(x509bundle.New(cfg.TrustDomain)),
		rotated:    make(chan struct{}, 1),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimesh_proxy_svid_renewals_total",
			Help: "SVID renewals and bootstraps, by kind and result.",
		}, []string{"kind", "result"}),
	}
	a.snapshots = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minimesh_proxy_snapshots_total",
		Help: "Snapshots received from meshd, by result (ack, nack).",
	}, []string{"result"})
	a.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "minimesh_proxy_state_files_refused_total",
		Help: "Files in the state dir not used because this proxy did not write them (another owner, a symbolic link, group or other permissions), by file.",
	}, []string{"file"})
	// Expiry as a Unix time, as Prometheus's own exporters say it: an
	// alert compares it with time(), and a scrape that stopped does not
	// look like a certificate that stopped ageing.
	a.expiry = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "minimesh_proxy_svid_expiration_timestamp_seconds",
		Help: "When the current SVID expires, in seconds since the Unix epoch (0 while the proxy has none).",
	}, a.svidNotAfter)
	a.rootsExp = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "minimesh_proxy_trust_bundle_expiration_timestamp_seconds",
		Help: "When the first root of the trust bundle meshd sent expires, in seconds since the Unix epoch (0 while the proxy has none).",
	}, a.bundleNotAfter)
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(a.renewals, a.snapshots, a.refused, a.expiry, a.rootsExp)
	}
	if svid, bundle, err := certs.LoadSVID(cfg.StateDir, cfg.TrustDomain); err == nil {
		a.svid.Set(svid)
		a.bundle.Set(bundle)
		if inst := certs.InstanceID(svid.Certificates[0]); inst != "" {
			a.instanceID = inst // a pod's instance, named by meshd
		}
		cfg.Logger.Info("loaded identity from state dir", "spiffe_id", svid.ID.String(), "serial", svid.Certificates[0].SerialNumber.Text(16), "expires", svid.Certificates[0].NotAfter)
	} else if errors.Is(err, fsguard.ErrUntrusted) {
		// A key or SVID this proxy did not write is never used; nor is it
		// silently replaced: someone put it there.
		return nil, fmt.Errorf("agent: state dir: %w", err)
	} else if !errors.Is(err, os.ErrNotExist) {
		cfg.Logger.Warn("state dir holds no usable SVID; will bootstrap", "error", err)
	}
	return a, nil
}

// InstanceID is this proxy's generated, persistent instance ID.
func (a *Agent) InstanceID() string { return a.instance() }

// instance is the instance this proxy is: the one its SVID is bound to
// once it has one (meshd names a pod's), else the generated one.
func (a *Agent) instance() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.instanceID
}

// SVIDSource is the proxy's current SVID, swapped in place on rotation.
func (a *Agent) SVIDSource() *certs.SVIDSource { return a.svid }

// BundleSource is the trust bundle, swapped in place when meshd sends a new one.
func (a *Agent) BundleSource() *certs.BundleSource { return a.bundle }

// Rotated receives a value after each new SVID (buffered, latest only).
func (a *Agent) Rotated() <-chan struct{} { return a.rotated }

// Ready is nil once the agent holds a valid SVID that chains to a root of
// its own trust bundle; otherwise it says why not. It describes this proxy
// only: readiness never depends on peers (one bad proxy would take its
// callers out of their Services too).
func (a *Agent) Ready() error {
	a.mu.Lock()
	notReady, lastErr := a.notReady, a.lastErr
	a.mu.Unlock()
	if _, err := a.svid.GetX509SVID(); err != nil {
		switch {
		case notReady != nil:
			return notReady
		case lastErr != nil:
			return fmt.Errorf("%w: %v; last attempt: %v", ErrNoIdentity, err, lastErr)
		default:
			return fmt.Errorf("%w: %v", ErrNoIdentity, err)
		}
	}
	return CheckOwnSVID(a.svid.Current(), a.bundle.Bundle(), a.cfg.Clock.Now())
}

// Connected reports whether the registration stream is up.
func (a *Agent) Connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.connected
}

// svidNotAfter is the current SVID's expiry in Unix seconds, 0 when none.
func (a *Agent) svidNotAfter() float64 {
	cur := a.svid.Current()
	if cur == nil {
		return 0
	}
	return float64(cur.Certificates[0].NotAfter.Unix())
}

// bundleNotAfter is the earliest expiry of the trust bundle's roots in
// Unix seconds, 0 when there are none.
func (a *Agent) bundleNotAfter() float64 {
	b := a.bundle.Bundle()
	if b == nil {
		return 0
	}
	var first int64
	for _, r := range b.X509Authorities() {
		if t := r.NotAfter.Unix(); first == 0 || t < first {
			first = t
		}
	}
	return float64(first)
}

// Run keeps the identity fresh and the registration stream up until ctx
// is cancelled.
func (a *Agent) Run(ctx context.Context) error {
	a.loadLastGood()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.registerLoop(ctx)
	}()
	a.identityLoop(ctx)
	wg.Wait()
	return nil
}

// identityLoop renews or bootstraps, then sleeps until the next renewal.
func (a *Agent) identityLoop(ctx context.Context) {
	// A restart with a valid SVID renews at once: the state on disk may be
	// old, and a renewal proves meshd still knows us.
	backoff := a.cfg.BackoffMin
	for {
		err := a.refresh(ctx)
		if err != nil && ctx.Err() != nil {
			return
		}
		wait := a.nextWait(err, backoff)
		if err != nil {
			a.setErr(err)
			backoff = min(backoff*2, a.cfg.BackoffMax)
			a.cfg.Logger.Warn("identity refresh failed; keeping the current SVID and retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
		} else {
			a.setErr(nil)
			backoff = a.cfg.BackoffMin
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (a *Agent) setErr(err error) {
	a.mu.Lock()
	a.lastErr = err
	if err == nil {
		a.notReady = nil
	}
	a.mu.Unlock()
}

// renewIn is half the current SVID's remaining life, ±10 %.
func (a *Agent) renewIn() time.Duration {
	a.mu.Lock()
	at := a.renewAt
	a.mu.Unlock()
	d := at.Sub(a.cfg.Clock.Now())
	if d < 0 {
		d = 0
	}
	return d
}

// refresh renews with a valid SVID, or bootstraps with the token.
func (a *Agent) refresh(ctx context.Context) error {
	if _, err := a.svid.GetX509SVID(); err == nil {
		return a.renew(ctx)
	}
	return a.bootstrap(ctx)
}

func (a *Agent) renew(ctx context.Context) error {
	key, err := certs.GenerateKey()
	if err != nil {
		return err
	}
	id := a.svid.Current().ID
	csr, err := certs.NewCSR(key, id)
	if err != nil {
		return err
	}
	gen := a.bundleGeneration()
	// A fresh connection per renewal: a long-lived one would still present
	// the certificate it was opened with, which may have expired.
	tc := certs.MTLSClientConfig(a.svid, a.bundle, certs.AuthorizeID(certs.MeshdID(a.cfg.TrustDomain)), certs.TLSOptions{Clock: a.cfg.Clock})
	req := &meshv1.RenewRequest{Csr: csr, InstanceId: a.instance()}
	// An SVID issued on a service-account token is renewed with a fresh
	// one, read now.
	if certs.PodUID(a.svid.Current().Certificates[0]) != "" {
		if req.K8SServiceAccountToken, err = a.readSAToken(); err != nil {
			a.renewals.WithLabelValues("renew", "error").Inc()
			return err
		}
	}
	var resp *meshv1.RenewResponse
	err = a.call(ctx, tc, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		resp, err = meshv1.NewIdentityServiceClient(conn).Renew(ctx, req)
		return err
	})
	if err != nil {
		a.renewals.WithLabelValues("renew", "error").Inc()
		return fmt.Errorf("agent: renew: %w", err)
	}
	if err := a.install(resp.GetSvid(), key, gen); err != nil {
		a.renewals.WithLabelValues("renew", "error").Inc()
		return err
	}
	a.renewals.WithLabelValues("renew", "ok").Inc()
	return nil
}

func (a *Agent) bootstrap(ctx context.Context) error {
	if a.cfg.Token == "" && a.cfg.SATokenFile == "" {
		err := fmt.Errorf("%w: the SVID is missing or expired and neither --token nor --sa-token-file was given", ErrNoToken)
		a.setNotReady(err)
		return err
	}
	id, err := certs.WorkloadID(a.cfg.TrustDomain, a.cfg.Namespace, a.cfg.ServiceAccount)
	if err != nil {
		return err
	}
	key, err := a.pendingKey()
	if err != nil {
		return err
	}
	csr, err := certs.NewCSR(key, id)
	if err != nil {
		return err
	}
	// The credential goes only to a server that passed the pin check: the
	// handshake fails before any request otherwise.
	tc, err := certs.PinnedClientConfigAny(a.pins, certs.MeshdID(a.cfg.TrustDomain), certs.TLSOptions{Clock: a.cfg.Clock})
	if err != nil {
		return err
	}
	req := &meshv1.BootstrapRequest{Token: a.cfg.Token, Csr: csr, InstanceId: a.instance()}
	if a.cfg.SATokenFile != "" {
		// meshd names a pod's instance: none is claimed.
		req.InstanceId = ""
		if req.K8SServiceAccountToken, err = a.readSAToken(); err != nil {
			a.renewals.WithLabelValues("bootstrap", "error").Inc()
			return err
		}
	}
	var resp *meshv1.BootstrapResponse
	gen := a.bundleGeneration()
	err = a.call(ctx, tc, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		resp, err = meshv1.NewIdentityServiceClient(conn).Bootstrap(ctx, req)
		return err
	})
	if err != nil {
		a.renewals.WithLabelValues("bootstrap", "error").Inc()
		if c := status.Code(err); c == codes.Unauthenticated || c == codes.InvalidArgument || c == codes.PermissionDenied || c == codes.FailedPrecondition {
			a.setNotReady(fmt.Errorf("%w: bootstrap refused by meshd: %s", ErrNoIdentity, status.Convert(err).Message()))
		}
		return fmt.Errorf("agent: bootstrap: %w", err)
	}
	if err := a.install(resp.GetSvid(), key, gen); err != nil {
		a.renewals.WithLabelValues("bootstrap", "error").Inc()
		return err
	}
	dropPendingKey(a.cfg.StateDir)
	a.renewals.WithLabelValues("bootstrap", "ok").Inc()
	return nil
}

func (a *Agent) setNotReady(err error) {
	a.mu.Lock()
	a.notReady = err
	a.mu.Unlock()
}

// call dials meshd with tc, runs fn with a bounded context and closes.
func (a *Agent) call(ctx context.Context, tc *tls.Config, fn func(context.Context, *grpc.ClientConn) error) error {
	conn, err := replicas.NewClient(a.cfg.ControlPlane, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	return fn(ctx, conn)
}

// install verifies and keeps a signed SVID: in memory first (new
// handshakes use it at once), then in the state dir. gen is the bundle
// generation when the request was sent: the reply's bundle is taken only if
// no snapshot's bundle came in since.
func (a *Agent) install(p *meshv1.X509SVID, key crypto.Signer, gen uint64) error {
	chain, err := certs.ParseCertsDER(p.GetCertChain())
	if err != nil {
		return fmt.Errorf("agent: SVID from meshd: %w", err)
	}
	roots, err := certs.ParseCertsDER(p.GetTrustBundle())
	if err != nil || len(roots) == 0 {
		return fmt.Errorf("agent: trust bundle from meshd: %v", err)
	}
	reply := x509bundle.FromX509Authorities(a.cfg.TrustDomain, roots)
	svid := &x509svid.SVID{Certificates: chain, PrivateKey: key}
	id, _, err := certs.VerifyPeerCertificates(chain, reply, a.cfg.Clock.Now())
	if err != nil {
		return fmt.Errorf("agent: SVID from meshd does not verify: %w", err)
	}
	svid.ID = id
	if cur := a.svid.Current(); cur != nil && cur.ID != id {
		return fmt.Errorf("agent: meshd issued %s but this proxy is %s", id, cur.ID)
	}
	// A pod's proxy learns its instance from its first SVID. Set before
	// the SVID is: the registration stream starts only once there is one.
	if inst := certs.InstanceID(chain[0]); inst != "" && inst != a.instance() {
		a.mu.Lock()
		a.instanceID = inst
		a.mu.Unlock()
		a.cfg.Logger.Info("instance named by meshd", "instance_id", inst)
	}
	bundle, err := a.takeReplyBundle(reply, gen, svid)
	if err != nil {
		return err
	}
	if err := certs.WriteSVID(a.cfg.StateDir, svid, bundle); err != nil {
		a.cfg.Logger.Warn("could not persist the SVID; it is in use but a restart will need to renew", "error", err)
	}
	leaf := chain[0]
	now := a.cfg.Clock.Now()
	half := leaf.NotAfter.Sub(now) / 2
	a.mu.Lock()
	a.renewAt = now.Add(jitter(half, 0.1))
	a.notReady = nil
	a.mu.Unlock()
	select {
	case a.rotated <- struct{}{}:
	default:
	}
	a.cfg.Logger.Info("new SVID in use", "spiffe_id", id.String(), "serial", leaf.SerialNumber.Text(16), "expires", leaf.NotAfter, "renew_in", half.Round(time.Millisecond))
	return nil
}

// jitter returns d ± frac·d, uniformly.
func jitter(d time.Duration, frac float64) time.Duration {
	return time.Duration(float64(d) * (1 + frac*(2*rand.Float64()-1)))
}
