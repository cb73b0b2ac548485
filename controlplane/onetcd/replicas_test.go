package onetcd_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/certs"
	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/store"
	meshv1 "minimesh/proto/mesh/v1"
)

// replicaConfig is replica i's config on ec's prefix.
func replicaConfig(ec *store.EtcdConfig, keyFile string, name string) controlplane.Config {
	c := *ec
	c.Replica = name
	return controlplane.Config{Etcd: &c, CAKeyFile: keyFile, SVIDTTL: 3 * time.Second}
}

// startReplicas starts two replicas, r0 and r1, at once on one new
// prefix with one CA key.
func startReplicas(t *testing.T) [2]*controlplanetest.Meshd {
	t.Helper()
	ec := testEtcd(t)
	keyFile, _ := writeCAKey(t)
	var ms [2]*controlplanetest.Meshd
	var wg sync.WaitGroup
	for i := range ms {
		wg.Go(func() { ms[i] = controlplanetest.Start(t, replicaConfig(ec, keyFile, fmt.Sprintf("r%d", i))) })
	}
	wg.Wait()
	return ms
}

// register opens a config stream to m as svid's proxy of service, within
// ctx, and returns it once meshd answered Registered.
func register(ctx context.Context, t *testing.T, m *controlplanetest.Meshd, svid *x509svid.SVID, service string) (meshv1.ConfigService_StreamClient, *meshv1.Registered) {
	t.Helper()
	st, err := meshv1.NewConfigServiceClient(m.DialAs(t, svid)).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&meshv1.StreamRequest{Message: &meshv1.StreamRequest_Hello{Hello: &meshv1.Hello{Service: service, AdvertiseAddress: "127.0.0.1:1"}}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil || r.GetRegistered() == nil {
		t.Fatalf("registration: %v %v", r, err)
	}
	return st, r.GetRegistered()
}

// openStore opens the prefix as the test's own reader.
func openStore(t *testing.T, ec *store.EtcdConfig) *store.Store {
	t.Helper()
	c := *ec
	c.Replica = "test-reader"
	st, err := store.Open(store.Config{Etcd: &c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func serial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// eventually polls cond (generous bound: the machine is shared).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func revoked(st *store.Store, serial string) bool {
	found := false
	_ = st.View(func(r *store.Reader) error {
		_, err := r.Get(store.TableRevocations, serial)
		found = err == nil
		return nil
	})
	return found
}

// TestReplicasSignWithTheirOwnIntermediates: two replicas on one prefix
// share the root but sign with intermediates of their own (path length 0,
// from the root, none of them the stored one); a root rotation driven by
// the leader reaches the other replica, which issues its new intermediate
// from the new root; a stopped replica's intermediate, the intermediates
// replaced at the rotation and the intermediate of a replica that vanished
// without a word all end in the revocations table (so in every snapshot's
// revoked serials) once the SVIDs they signed have expired.
func TestReplicasSignWithTheirOwnIntermediates(t *testing.T) {
	ec := testEtcd(t)
	keyFile, _ := writeCAKey(t)
	ms := []*controlplanetest.Meshd{
		controlplanetest.Start(t, replicaConfig(ec, keyFile, "r0")),
		controlplanetest.Start(t, replicaConfig(ec, keyFile, "r1")),
	}
	root := ms[0].CA().Root()
	if !ms[1].CA().Root().Equal(root) {
		t.Fatal("two replicas, two roots")
	}
	st := openStore(t, ec)
	stored, err := controlplane.LoadCAState(st, keyFile, certs.CAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var inters []*x509.Certificate
	for i, m := range ms {
		svid := bootstrap(t, m, "default", []string{"web", "api"}[i])
		in := svid.Certificates[1]
		if !in.Equal(m.CA().Intermediate()) {
			t.Fatalf("replica %d signed with %s, not its intermediate %s", i, serial(in), serial(m.CA().Intermediate()))
		}
		if err := in.CheckSignatureFrom(root); err != nil || !in.IsCA || in.MaxPathLen != 0 || !in.MaxPathLenZero {
			t.Fatalf("replica %d's intermediate: signed by the root: %v, CA %v, pathlen %d zero %v", i, err, in.IsCA, in.MaxPathLen, in.MaxPathLenZero)
		}
		if life := in.NotAfter.Sub(in.NotBefore); life < controlplane.ReplicaIntermediateTTL || life > controlplane.ReplicaIntermediateTTL+time.Minute {
			t.Fatalf("replica %d's intermediate lives %v", i, life)
		}
		if in.Equal(stored.Intermediate()) {
			t.Fatalf("replica %d signs with the stored intermediate", i)
		}
		inters = append(inters, in)
	}
	if inters[0].Equal(inters[1]) {
		t.Fatal("both replicas sign with one intermediate")
	}

	// A root rotation through a follower: an operator's step needs no
	// leader (a compare-and-swap on the stored CA), and each replica then
	// sees the rotation in progress.
	var ver *meshv1.VersionResponse
	eventually(t, "a leader elected", func() bool {
		ver, err = ms[0].Operator(t).Version(context.Background(), &meshv1.VersionRequest{})
		return err == nil && ver.GetLeader() != ""
	})
	leader := map[string]int{"r0": 0, "r1": 1}[ver.GetLeader()]
	follower := 1 - leader
	if _, err := ms[follower].RotateCA(false); err != nil {
		t.Fatalf("RotateCA through the follower: %v", err)
	}
	if _, err := ms[leader].RotateCA(false); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "in progress") {
		t.Fatalf("a second rotation through the leader: %v, want FailedPrecondition: a rotation is in progress", err)
	}
	if _, err := ms[follower].RotateCA(true); err != nil { // activate now, through the follower
		t.Fatal(err)
	}
	// From here on: actor took the steps; the leader follows it and is
	// then stopped, its intermediate retired by actor once it leads.
	actor := follower
	newRoot := ms[actor].CA().Root()
	if newRoot.Equal(root) {
		t.Fatal("the replica that activated still signs from the old root")
	}
	other := leader
	eventually(t, "the leader takes the new root and re-issues its operator credential from it", func() bool {
		if !ms[other].CA().Root().Equal(newRoot) {
			return false
		}
		op, _, err := certs.LoadSVID(ms[other].OperatorCredentialDir(), ms[other].TrustDomain())
		return err == nil && op.Certificates[len(op.Certificates)-1].CheckSignatureFrom(newRoot) == nil
	})
	var after []*x509.Certificate
	for i, m := range ms {
		in := m.CA().Intermediate()
		if err := in.CheckSignatureFrom(newRoot); err != nil {
			t.Fatalf("replica %d after activation: intermediate not from the new root: %v", i, err)
		}
		after = append(after, in)
	}
	if after[0].Equal(after[1]) {
		t.Fatal("after the rotation both replicas sign with one intermediate")
	}
	svid := bootstrap(t, ms[other], "default", "db")
	if err := svid.Certificates[1].CheckSignatureFrom(newRoot); err != nil {
		t.Fatalf("the follower signs an SVID under the old root after activation: %v", err)
	}

	// A replica that vanished without retiring its intermediate (its
	// lease is gone): the leader retires it.
	orphan := "0abc"
	if err := st.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableIntermediates, &store.Intermediate{Serial: orphan, Replica: "gone", NotAfter: time.Now().Add(time.Hour), IssuedAt: time.Now()})
	}); err != nil {
		t.Fatal(err)
	}
	ms[other].Stop()
	for what, s := range map[string]string{
		"the stopped replica's intermediate":           serial(after[other]),
		"replica 0's intermediate before the rotation": serial(inters[0]),
		"replica 1's intermediate before the rotation": serial(inters[1]),
		"the vanished replica's intermediate":          orphan,
	} {
		eventually(t, what+" revoked", func() bool { return revoked(st, s) })
	}
	if revoked(st, serial(after[actor])) {
		t.Fatal("the running replica's intermediate is revoked")
	}
	var rec *store.Intermediate
	_ = st.View(func(r *store.Reader) error {
		x, err := r.Get(store.TableIntermediates, serial(after[other]))
		if err == nil {
			rec = x.(*store.Intermediate)
		}
		return err
	})
	if rec == nil || rec.Replica != "r"+string(rune('0'+other)) || rec.RevokeAt.Sub(rec.RetiredAt) != 3*time.Second {
		t.Fatalf("the stopped replica's record: %+v", rec)
	}
	// Nothing in the store holds a replica's intermediate: the stored
	// state's is none of theirs.
	stored, err = controlplane.LoadCAState(st, keyFile, certs.CAConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range append(inters, after...) {
		if stored.Intermediate().Equal(in) {
			t.Fatalf("the stored CA state holds replica intermediate %s", serial(in))
		}
	}
}

// TestReplicaRefusesAnotherTrustDomainOrKeyOnOnePrefix: a second replica
// on a prefix whose CA is of another trust domain, or sealed under
// another key file, refuses to start saying why, and the first one's CA
// is untouched.
func TestReplicaRefusesAnotherTrustDomainOrKeyOnOnePrefix(t *testing.T) {
	ec := testEtcd(t)
	keyFile, _ := writeCAKey(t)
	first := controlplanetest.Start(t, replicaConfig(ec, keyFile, "r0"))
	pin := first.RootPin()

	cfg := replicaConfig(ec, keyFile, "r1")
	cfg.DataDir = filepath.Join(t.TempDir(), "d1")
	cfg.TrustDomain = "other.example"
	_, err := controlplane.New(cfg)
	if !errors.Is(err, controlplane.ErrTrustDomainMismatch) {
		t.Fatalf("another trust domain on one prefix: %v", err)
	}
	for _, want := range []string{`"other.example"`, `"minimesh.local"`, "same trust domain", ec.Prefix} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %s", err, want)
		}
	}

	otherKey, _ := writeCAKey(t)
	cfg = replicaConfig(ec, otherKey, "r2")
	cfg.DataDir = filepath.Join(t.TempDir(), "d2")
	_, err = controlplane.New(cfg)
	if !errors.Is(err, controlplane.ErrCAKeyMismatch) {
		t.Fatalf("another CA key file on one prefix: %v", err)
	}
	for _, want := range []string{"same key file", "--ca-key-file", ec.Prefix} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %s", err, want)
		}
	}
	if first.RootPin() != pin || bootstrap(t, first, "default", "web") == nil {
		t.Fatal("the first replica changed")
	}
	st := openStore(t, ec)
	live, err := st.Replicas(ctx(t))
	if err != nil || len(live) != 1 {
		t.Fatalf("live replicas after two refused starts: %v %v", live, err)
	}
}

// TestSchemaGateAndNewerSchemaRefused: a schema change is allowed only
// when every live replica announces it reads it, and a replica refuses to
// start on a prefix whose schema is newer than it knows, saying so.
func TestSchemaGateAndNewerSchemaRefused(t *testing.T) {
	ec := testEtcd(t)
	keyFile, _ := writeCAKey(t)
	controlplanetest.Start(t, replicaConfig(ec, keyFile, "r0"))
	controlplanetest.Start(t, replicaConfig(ec, keyFile, "r1"))
	st := openStore(t, ec)
	if err := controlplane.SchemaUpgradeAllowed(ctx(t), st, store.SchemaVersion); err != nil {
		t.Fatalf("the current schema: %v", err)
	}
	err := controlplane.SchemaUpgradeAllowed(ctx(t), st, store.SchemaVersion+1)
	if err == nil || !strings.Contains(err.Error(), "r0 (") || !strings.Contains(err.Error(), "r1 (") {
		t.Fatalf("schema N+1 while both replicas read N: %v", err)
	}
	// A replica of N+1 announcing itself beside them: still refused for r0 and r1 only.
	if err := st.SetReplicaInfo(fmt.Sprintf(`{"version":"next","schema":%d}`, store.SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	if err := controlplane.SchemaUpgradeAllowed(ctx(t), st, store.SchemaVersion+1); err == nil || strings.Contains(err.Error(), "test-reader") {
		t.Fatalf("schema N+1 with one replica of N+1: %v", err)
	}

	cli, err := etcdSrv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	newer := testEtcd(t)
	if _, err := cli.Put(ctx(t), newer.Prefix+"schema", strconv.Itoa(store.SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	cfg := replicaConfig(newer, keyFile, "old")
	cfg.DataDir = filepath.Join(t.TempDir(), "d")
	_, err = controlplane.New(cfg)
	if !errors.Is(err, store.ErrSchema) || !strings.Contains(err.Error(), fmt.Sprintf("schema %d", store.SchemaVersion+1)) || !strings.Contains(err.Error(), "run the newer meshd") {
		t.Fatalf("a replica on a newer schema: %v", err)
	}
}
