package push

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/controlplane/authn"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

var td = spiffeid.RequireTrustDomainFromString("minimesh.local")

// meshd is the push server behind a real TLS gRPC server on 127.0.0.1:0,
// with the authn interceptor meshd uses, over a real bbolt file and a real
// CA.
type meshd struct {
	t     *testing.T
	ca    *certs.CA
	store *store.Store
	srv   *Server
	addr  string
	reg   *prometheus.Registry
	stop  func()
}

// startMeshd runs a push server on st (a new store when nil).
func startMeshd(t *testing.T, ca *certs.CA, st *store.Store, grace time.Duration) *meshd {
	t.Helper()
	if ca == nil {
		var err error
		if ca, err = certs.NewCA(certs.CAConfig{TrustDomain: td}); err != nil {
			t.Fatal(err)
		}
	}
	if st == nil {
		var err error
		if st, err = store.Open(store.Config{Path: filepath.Join(t.TempDir(), "meshd.db")}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
	}
	reg := prometheus.NewRegistry()
	bundle := func() [][]byte {
		var out [][]byte
		for _, c := range ca.Bundle().X509Authorities() {
			out = append(out, c.Raw)
		}
		return out
	}
	srv, err := New(Config{Store: st, Bundle: bundle, EndpointGrace: grace, Debounce: 5 * time.Millisecond, MaxDelay: 50 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	auth := authn.New(authn.Config{TrustDomain: td, Bundle: certs.NewBundleSource(ca.Bundle()),
		Rules: authn.Rules{meshv1.ConfigService_Stream_FullMethodName: authn.Workload}})
	serving := certs.NewSVIDSource(nil)
	svid, err := ca.IssueServingSVID(certs.MeshdID(td), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving.Set(svid)
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(certs.OptionalClientServerConfig(serving))),
		grpc.StreamInterceptor(auth.Stream), grpc.ForceServerCodecV2(Codec()))
	meshv1.RegisterConfigServiceServer(g, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served, ran := make(chan struct{}), make(chan struct{})
	go func() { defer close(served); _ = g.Serve(lis) }()
	go func() { defer close(ran); _ = srv.Run(ctx) }()
	m := &meshd{t: t, ca: ca, store: st, srv: srv, addr: lis.Addr().String(), reg: reg}
	stopped := false
	m.stop = func() {
		if stopped {
			return
		}
		stopped = true
		srv.Shutdown()
		g.GracefulStop()
		<-served
		cancel()
		<-ran
	}
	t.Cleanup(m.stop)
	return m
}

// svid issues an SVID of sa bound to instance: in its Subject, or (subject
// false) only in meshd's certificate record, as before instances were
// written into certificates ("" records none).
func (m *meshd) svid(sa, instance string, subject bool) *x509svid.SVID {
	m.t.Helper()
	id := spiffeid.RequireFromPath(td, "/ns/default/sa/"+sa)
	var opts []certs.IssueOption
	if subject {
		opts = append(opts, certs.WithInstance(instance))
	}
	svid, err := m.ca.IssueSVID(id, time.Hour, opts...)
	if err != nil {
		m.t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	rec := &store.Certificate{Serial: leaf.SerialNumber.Text(16), SPIFFEID: id.String(), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
		IssuedBy: "bootstrap", InstanceID: instance}
	if err := m.store.Update(func(tx *store.Txn) error { return tx.Put(store.TableCertificates, rec) }); err != nil {
		m.t.Fatal(err)
	}
	return svid
}

// client is one proxy's stream.
type client struct {
	st     meshv1.ConfigService_StreamClient
	cancel context.CancelFunc
	msgs   chan *meshv1.StreamResponse
	err    chan error // the stream's end
}

// open dials meshd as svid and sends hello; the answer is the first message.
func (m *meshd) open(svid *x509svid.SVID, hello *meshv1.Hello) *client {
	m.t.Helper()
	src := certs.NewSVIDSource(nil)
	src.Set(svid)
	tc := certs.MTLSClientConfig(src, certs.NewBundleSource(m.ca.Bundle()), certs.AuthorizeID(certs.MeshdID(td)), certs.TLSOptions{})
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	m.t.Cleanup(cancel)
	st, err := meshv1.NewConfigServiceClient(conn).Stream(ctx)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: hello}}); err != nil {
		m.t.Fatal(err)
	}
	c := &client{st: st, cancel: cancel, msgs: make(chan *meshv1.StreamResponse, 64), err: make(chan error, 1)}
	go func() {
		for {
			msg, err := st.Recv()
			if err != nil {
				c.err <- err
				return
			}
			select {
			case c.msgs <- msg:
			case <-ctx.Done():
				c.err <- ctx.Err()
				return
			}
		}
	}()
	return c
}

// registered waits for the Registered answer.
func (c *client) registered(t *testing.T) {
	t.Helper()
	select {
	case msg := <-c.msgs:
		if msg.GetRegistered() == nil {
			t.Fatalf("first answer %v, want Registered", msg)
		}
	case err := <-c.err:
		t.Fatalf("stream ended before Registered: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the hello")
	}
}

// refused waits for the stream to end and checks its code; it fails if
// any message came first (no Registered, no snapshot).
func (c *client) refused(t *testing.T, code codes.Code) error {
	t.Helper()
	select {
	case msg := <-c.msgs:
		t.Fatalf("got %v, want the stream refused with %v", msg, code)
	case err := <-c.err:
		if status.Code(err) != code {
			t.Fatalf("stream ended with %v, want %v", err, code)
		}
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the stream was not refused")
	}
	return nil
}

// ended waits for the stream to end (snapshots before that are dropped)
// and returns its error.
func (c *client) ended(t *testing.T) error {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case <-c.msgs:
		case err := <-c.err:
			return err
		case <-timeout:
			t.Fatal("the stream did not end")
		}
	}
}

// snapshotWith waits for a snapshot for which ok holds.
func (c *client) snapshotWith(t *testing.T, what string, ok func(*meshv1.Snapshot) bool) *meshv1.Snapshot {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var last *meshv1.Snapshot
	for {
		select {
		case msg := <-c.msgs:
			if s := msg.GetSnapshot(); s != nil {
				last = s
				if ok(s) {
					return s
				}
			}
		case err := <-c.err:
			t.Fatalf("%s: the stream ended: %v (last snapshot %v)", what, err, last)
		case <-timeout:
			t.Fatalf("%s: no such snapshot (last %v)", what, last)
		}
	}
}

func hello(service, instance string) *meshv1.Hello {
	return &meshv1.Hello{InstanceId: instance, Service: service, AdvertiseAddress: "127.0.0.1:15006", ProxyVersion: "test"}
}

// proxy reads a stored proxy record.
func (m *meshd) proxy(id string) (*store.Proxy, error) {
	var p *store.Proxy
	err := m.store.View(func(r *store.Reader) error {
		rec, err := r.Get(store.TableProxies, id)
		if err == nil {
			p = rec.(*store.Proxy)
		}
		return err
	})
	return p, err
}

// groupSnap is the snapshot meshd holds for the group of instance id,
// after a recompute (Run's is asynchronous; this one is not).
func (m *meshd) groupSnap(id string) *meshv1.Snapshot {
	m.t.Helper()
	if err := m.srv.recompute(); err != nil {
		m.t.Fatal(err)
	}
	m.srv.mu.Lock()
	defer m.srv.mu.Unlock()
	gs := m.srv.current[m.srv.members[id]]
	if gs == nil {
		m.t.Fatalf("no snapshot for %s's group", id)
	}
	return gs.snap
}

func hasEndpoint(s *meshv1.Snapshot, instance string) bool {
	for _, e := range s.GetEndpoints() {
		if e.GetInstanceId() == instance {
			return true
		}
	}
	return false
}

// waitState waits until meshd shows instance in state.
func (m *meshd) waitState(id string, want meshv1.SyncState) {
	m.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		var all []*meshv1.ProxySync
		if all, err = m.srv.Sync(); err == nil {
			err = fmt.Errorf("%s not listed", id)
			for _, ps := range all {
				if ps.GetProxy().GetInstanceId() == id {
					if ps.GetState() == want {
						return
					}
					err = fmt.Errorf("%s is %v", id, ps.GetState())
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.t.Fatalf("%s never %v: %v", id, want, err)
}

// counter is the value of a labelled counter of meshd's registry.
func (m *meshd) counter(name, label, value string) float64 {
	m.t.Helper()
	fams, err := m.reg.Gather()
	if err != nil {
		m.t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			if label == "" {
				return mt.GetCounter().GetValue()
			}
			for _, l := range mt.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
