// Package onetcd_test runs meshd on an etcd store, end to end: one
// in-process etcd for the package (TestMain), each test under its own
// prefix.
package onetcd_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/controlplane/store"
	"minimesh/controlplane/store/storetest"
	meshv1 "minimesh/proto/mesh/v1"
)

var (
	etcdSrv *storetest.Etcd
	etcdN   atomic.Int64
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "onetcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if etcdSrv, err = storetest.StartEmbedded(dir); err != nil {
		fmt.Fprintln(os.Stderr, "embedded etcd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	etcdSrv.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testEtcd is the package's etcd under a new prefix.
func testEtcd(t *testing.T) *store.EtcdConfig {
	t.Helper()
	return &store.EtcdConfig{Endpoints: etcdSrv.Endpoints, Prefix: fmt.Sprintf("/t%d-%d/", time.Now().UnixNano(), etcdN.Add(1)), SessionTTL: 5}
}

const td = "minimesh.local"

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func writeCAKey(t *testing.T) (string, []byte) {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.key")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}

// bootstrap gets an SVID for ns/sa through a fresh token, over gRPC.
// bootstrap gets an SVID for ns/sa through a fresh token.
func bootstrap(t *testing.T, m *controlplanetest.Meshd, ns, sa string) *x509svid.SVID {
	t.Helper()
	return m.Bootstrap(t, ns, sa)
}

func serviceResource(name string) *meshv1.Resource {
	return &meshv1.Resource{
		ApiVersion: "minimesh.io/v1alpha1", Kind: "Service", Name: name, Namespace: "default",
		Spec: &meshv1.Resource_Service{Service: &meshv1.ServiceSpec{
			Ports:             []*meshv1.ServicePort{{Name: "http", Port: 8080, Protocol: meshv1.Protocol_PROTOCOL_HTTP}},
			ServingIdentities: []string{"spiffe://minimesh.local/ns/default/sa/" + name},
		}},
	}
}

func backupVia(t *testing.T, m *controlplanetest.Meshd) []byte {
	t.Helper()
	stream, err := m.Operator(t).Backup(ctx(t), &meshv1.BackupRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.GetChunk()...)
	}
}

// TestMeshdRunsOnEtcd: meshd with an etcd store bootstraps a proxy, keeps
// its CA sealed in etcd, and a restart on the same prefix has the same
// root and the token's use consumed; without --ca-key-file it refuses.
func TestMeshdRunsOnEtcd(t *testing.T) {
	ec := testEtcd(t)
	if _, err := controlplane.New(controlplane.Config{DataDir: filepath.Join(t.TempDir(), "d"), Etcd: ec}); err == nil || !strings.Contains(err.Error(), "--ca-key-file is required") {
		t.Fatalf("etcd store without a CA key file: %v", err)
	}
	keyFile, _ := writeCAKey(t)
	m := controlplanetest.Start(t, controlplane.Config{Etcd: ec, CAKeyFile: keyFile})
	pin := m.RootPin()
	svid := bootstrap(t, m, "default", "web")
	if svid.ID.String() != "spiffe://"+td+"/ns/default/sa/web" {
		t.Fatalf("SVID for %s", svid.ID)
	}
	tok := m.Token(t, "default", "api", 1)
	op := m.Operator(t)
	list, err := op.ListCertificates(ctx(t), &meshv1.ListCertificatesRequest{})
	if err != nil || len(list.GetCertificates()) < 2 { // the operator's and web's
		t.Fatalf("certificates: %v %v", list, err)
	}
	cli, err := etcdSrv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	raw, err := cli.Get(ctx(t), ec.Prefix+"m/ca")
	if err != nil || len(raw.Kvs) != 1 || !strings.HasPrefix(string(raw.Kvs[0].Value), "MMCASEAL") {
		t.Fatalf("the CA state in etcd is not sealed: %v", err)
	}
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	lag := -1.0
	for _, f := range fams {
		if f.GetName() == "minimesh_meshd_cache_lag_seconds" {
			lag = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if lag != 0 {
		t.Fatalf("minimesh_meshd_cache_lag_seconds = %v on an idle meshd (-1: not exported)", lag)
	}
	m = m.Restart(t)
	if m.RootPin() != pin {
		t.Fatalf("root %s after a restart on etcd, want %s", m.RootPin(), pin)
	}
	toks, err := m.Operator(t).ListJoinTokens(ctx(t), &meshv1.ListJoinTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range toks.GetTokens() {
		found = found || x.GetId() == tok.GetToken().GetId()
	}
	if !found {
		t.Fatalf("the token made before the restart is gone: %v", toks)
	}
}

// TestApplyLimitsOnEveryStore: an Apply of more than 100 objects is
// refused on bbolt too, naming the limit, and changes nothing.
func TestApplyLimitsOnEveryStore(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	var rs []*meshv1.Resource
	for i := range store.MaxApplyObjects + 1 {
		rs = append(rs, serviceResource("s"+strconv.Itoa(i)))
	}
	_, err := m.Operator(t).Apply(ctx(t), &meshv1.ApplyRequest{Resources: rs})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "at most 100 objects") {
		t.Fatalf("an Apply of 101 objects: %v", err)
	}
	got, err := m.Operator(t).GetResources(ctx(t), &meshv1.GetResourcesRequest{})
	if err != nil || len(got.GetResources()) != 0 {
		t.Fatalf("after a refused Apply: %d resources, %v", len(got.GetResources()), err)
	}
	if _, err := m.Operator(t).Apply(ctx(t), &meshv1.ApplyRequest{Resources: rs[:store.MaxApplyObjects]}); err != nil {
		t.Fatalf("an Apply of 100 objects: %v", err)
	}
}

// TestRestoreBboltBackupIntoEtcd: a bbolt meshd's backup restores into an
// empty etcd prefix, meshd runs on it with the same resources and root,
// and a second restore into that prefix is refused.
func TestRestoreBboltBackupIntoEtcd(t *testing.T) {
	keyFile, _ := writeCAKey(t)
	b := controlplanetest.Start(t, controlplane.Config{CAKeyFile: keyFile})
	op := b.Operator(t)
	if _, err := op.Apply(ctx(t), &meshv1.ApplyRequest{Resources: []*meshv1.Resource{serviceResource("web"), serviceResource("api")}}); err != nil {
		t.Fatal(err)
	}
	want, err := op.GetResources(ctx(t), &meshv1.GetResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	backup := backupVia(t, b)
	pin := b.RootPin()
	b.Stop()
	file := filepath.Join(t.TempDir(), "backup")
	if err := os.WriteFile(file, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	ec := testEtcd(t)
	scratch := filepath.Join(t.TempDir(), "scratch")
	if err := controlplane.RestoreEtcd(ec, scratch, file, keyFile); err != nil {
		t.Fatalf("restore into etcd: %v", err)
	}
	if err := controlplane.RestoreEtcd(ec, scratch, file, keyFile); err == nil || !strings.Contains(err.Error(), "restore into an empty one") {
		t.Fatalf("a second restore into the same prefix: %v", err)
	}
	e := controlplanetest.Start(t, controlplane.Config{Etcd: ec, CAKeyFile: keyFile})
	if e.RootPin() != pin {
		t.Fatalf("root %s on etcd, want %s", e.RootPin(), pin)
	}
	got, err := e.Operator(t).GetResources(ctx(t), &meshv1.GetResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.GetResources()) != fmt.Sprint(want.GetResources()) || got.GetRevision() != want.GetRevision() {
		t.Fatalf("resources on etcd differ from bbolt's:\nwant %v\ngot  %v", want, got)
	}
}

// TestEtcdStoreFlags: --store and the --etcd-* flags are checked, each
// refusal naming the flag.
func TestEtcdStoreFlags(t *testing.T) {
	if ec, err := (controlplane.EtcdStoreFlags{Store: "bbolt"}).EtcdConfig(); ec != nil || err != nil {
		t.Fatalf("bbolt: %v %v", ec, err)
	}
	ec, err := (controlplane.EtcdStoreFlags{Store: "etcd://127.0.0.1:2379,localhost:2380", Prefix: "/m/"}).EtcdConfig()
	if err != nil || strings.Join(ec.Endpoints, ",") != "http://127.0.0.1:2379,http://localhost:2380" || ec.Prefix != "/m/" {
		t.Fatalf("loopback etcd: %v %v", ec, err)
	}
	for _, c := range []struct {
		f    controlplane.EtcdStoreFlags
		want string
	}{
		{controlplane.EtcdStoreFlags{Store: "etcd://10.0.0.1:2379"}, "without TLS"},
		{controlplane.EtcdStoreFlags{Store: "etcd://"}, "--store"},
		{controlplane.EtcdStoreFlags{Store: "consul://x:1"}, "--store"},
		{controlplane.EtcdStoreFlags{Store: "etcd://h:1/path"}, "--store"},
		{controlplane.EtcdStoreFlags{Store: "etcd://10.0.0.1:2379", Cert: "c"}, "go together"},
		{controlplane.EtcdStoreFlags{Store: "bbolt", CA: "ca"}, "need --store"},
		{controlplane.EtcdStoreFlags{Store: "etcd://h:1", Cert: "/nonexistent", Key: "/nonexistent", CA: "/nonexistent"}, "--etcd-cert"},
	} {
		if _, err := c.f.EtcdConfig(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.f, err, c.want)
		}
	}
}

// TestTwoMeshdOnOnePrefix: two meshd started on one etcd prefix share one
// CA (the first stored wins, the other loads it), and Applies racing
// through both each answer with exactly their own results: an Apply whose
// update function ran again after a conflict does not report twice.
func TestTwoMeshdOnOnePrefix(t *testing.T) {
	ec := testEtcd(t)
	keyFile, _ := writeCAKey(t)
	var ms [2]*controlplanetest.Meshd
	var wg sync.WaitGroup
	for i := range ms {
		wg.Go(func() { ms[i] = controlplanetest.Start(t, controlplane.Config{Etcd: ec, CAKeyFile: keyFile}) })
	}
	wg.Wait()
	if ms[0].RootPin() != ms[1].RootPin() {
		t.Fatalf("two meshd on one prefix made two CAs: %s and %s", ms[0].RootPin(), ms[1].RootPin())
	}
	ops := []meshv1.AdminServiceClient{ms[0].Operator(t), ms[1].Operator(t)}
	for round := range 15 {
		for i, op := range ops {
			wg.Go(func() {
				rs := []*meshv1.Resource{serviceResource(fmt.Sprintf("a%d-%d", i, round)), serviceResource(fmt.Sprintf("b%d-%d", i, round))}
				resp, err := op.Apply(ctx(t), &meshv1.ApplyRequest{Resources: rs})
				if err != nil {
					t.Error(err)
					return
				}
				if n := len(resp.GetResults()); n != 2 {
					t.Errorf("round %d meshd %d: %d results for an Apply of 2 objects: %v", round, i, n, resp.GetResults())
				}
			})
		}
		wg.Wait()
	}
	got, err := ops[1].GetResources(ctx(t), &meshv1.GetResourcesRequest{})
	if err != nil || len(got.GetResources()) != 60 {
		t.Fatalf("after 30 applies of 2 objects through two meshd: %d resources, %v", len(got.GetResources()), err)
	}
}
