package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	clientv3 "go.etcd.io/etcd/client/v3"

	"minimesh/certs"
	"minimesh/controlplane/identity"
	"minimesh/controlplane/store"
)

// Env is one test's store state on one backend.
type Env struct {
	// Open returns a store on this state. On etcd every call is another
	// replica (its own client, cache and session); on bbolt every call
	// returns the one instance (a file belongs to one process).
	Open func(t *testing.T) *store.Store
	// Etcd is the etcd behind the state (nil on bbolt); Prefix its prefix.
	Etcd   *Etcd
	Prefix string
	// OpenVia opens a replica whose connection to etcd goes through addr
	// (a relay the test controls); nil on bbolt.
	OpenVia func(t *testing.T, endpoint string) *store.Store
}

// Backend makes a fresh Env for each test.
type Backend func(t *testing.T) *Env

// Bbolt is the bbolt backend: a file in t.TempDir().
func Bbolt(t *testing.T) *Env {
	path := filepath.Join(t.TempDir(), "meshd.db")
	var once sync.Once
	var st *store.Store
	return &Env{Open: func(t *testing.T) *store.Store {
		once.Do(func() {
			var err error
			if st, err = store.Open(store.Config{Path: path}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
		})
		return st
	}}
}

var prefixes atomic.Int64

// OnEtcd is the etcd backend on e, each test under a prefix of its own.
func OnEtcd(e *Etcd) Backend {
	return func(t *testing.T) *Env {
		prefix := fmt.Sprintf("/test-%d-%d/", time.Now().UnixNano(), prefixes.Add(1))
		open := func(t *testing.T, eps []string) *store.Store {
			st, err := store.Open(store.Config{Etcd: &store.EtcdConfig{Endpoints: eps, Prefix: prefix,
				Replica: "r" + strconv.FormatInt(prefixes.Add(1), 10), SessionTTL: 5, RequestTimeout: 10 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		return &Env{
			Open:    func(t *testing.T) *store.Store { return open(t, e.Endpoints) },
			OpenVia: func(t *testing.T, ep string) *store.Store { return open(t, []string{ep}) },
			Etcd:    e,
			Prefix:  prefix,
		}
	}
}

// Run runs the whole suite on a backend.
func Run(t *testing.T, b Backend) {
	t.Run("AllOrNothing", func(t *testing.T) { AllOrNothing(t, b(t)) })
	t.Run("ReferenceChecksAreRangeReads", func(t *testing.T) { ReferenceChecksAreRangeReads(t, b(t)) })
	t.Run("RacingBootstrapsOneWinner", func(t *testing.T) { RacingBootstrapsOneWinner(t, b(t)) })
	t.Run("RevisionMonotonic", func(t *testing.T) { RevisionMonotonic(t, b(t)) })
	t.Run("TooLargeRefused", func(t *testing.T) { TooLargeRefused(t, b(t)) })
	t.Run("Consistency", func(t *testing.T) { Consistency(t, b(t)) })
	t.Run("BackupImport", func(t *testing.T) { BackupImport(t, b(t), b(t)) })
	t.Run("PausedExLeaderRefused", func(t *testing.T) { PausedExLeaderRefused(t, b(t)) })
	t.Run("PresenceIsLeasedRecordIsNot", func(t *testing.T) { PresenceIsLeasedRecordIsNot(t, b(t)) })
	t.Run("WatchResumesAfterCompaction", func(t *testing.T) { WatchResumesAfterCompaction(t, b(t)) })
	t.Run("ReadThroughOnMiss", func(t *testing.T) { ReadThroughOnMiss(t, b(t)) })
}

// ReadThroughOnMiss: a record another replica committed a moment ago is
// found by ViewFresh and by an Update that would refuse without it, even
// when this replica's watch has not delivered it yet.
func ReadThroughOnMiss(t *testing.T, e *Env) {
	a, b := e.Open(t), e.Open(t)
	find := func(r *store.Reader, key string) error {
		_, err := r.Get(store.TableDenials, key)
		return err
	}
	for i := range 20 {
		k := "viewfresh-" + strconv.Itoa(i)
		if err := a.Update(func(tx *store.Txn) error { return tx.Put(store.TableDenials, &store.Denial{SPIFFEID: k}) }); err != nil {
			t.Fatal(err)
		}
		if err := b.ViewFresh(func(r *store.Reader) error { return find(r, k) }); err != nil {
			t.Fatalf("round %d: ViewFresh right after another replica's commit: %v", i, err)
		}
		k = "update-" + strconv.Itoa(i)
		if err := a.Update(func(tx *store.Txn) error { return tx.Put(store.TableDenials, &store.Denial{SPIFFEID: k}) }); err != nil {
			t.Fatal(err)
		}
		if err := b.Update(func(tx *store.Txn) error {
			if err := find(&tx.Reader, k); err != nil {
				return err
			}
			return tx.SetMeta("seen", []byte(k))
		}); err != nil {
			t.Fatalf("round %d: an Update needing another replica's record committed a moment ago: %v", i, err)
		}
	}
}

func sync5(t *testing.T, st *store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, st *store.Store, tbl string) int {
	t.Helper()
	sync5(t, st)
	n := 0
	if err := st.View(func(r *store.Reader) error {
		recs, err := r.List(tbl, "id")
		n = len(recs)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// AllOrNothing: a failing update leaves nothing of its writes, on any
// replica; a succeeding one is seen by every replica after Sync.
func AllOrNothing(t *testing.T, e *Env) {
	a, b := e.Open(t), e.Open(t)
	boom := errors.New("boom")
	err := a.Update(func(tx *store.Txn) error {
		for i := range 3 {
			if err := tx.Put(store.TableDenials, &store.Denial{SPIFFEID: "spiffe://td/ns/a/sa/" + strconv.Itoa(i)}); err != nil {
				return err
			}
		}
		if _, err := tx.Bump(); err != nil {
			return err
		}
		if n, _ := tx.List(store.TableDenials, "id"); len(n) != 3 {
			t.Errorf("a transaction sees %d of its own 3 writes", len(n))
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	for i, st := range []*store.Store{a, b} {
		if n := count(t, st, store.TableDenials); n != 0 {
			t.Fatalf("replica %d: %d records of a failed update", i, n)
		}
		if rev, _ := st.Revision(); rev != 0 {
			t.Fatalf("replica %d: revision %d after a failed update", i, rev)
		}
	}
	if err := a.Update(func(tx *store.Txn) error {
		_, err := tx.Bump()
		if err != nil {
			return err
		}
		return tx.Put(store.TableDenials, &store.Denial{SPIFFEID: "spiffe://td/ns/a/sa/x"})
	}); err != nil {
		t.Fatal(err)
	}
	for i, st := range []*store.Store{a, b} {
		if n := count(t, st, store.TableDenials); n != 1 {
			t.Fatalf("replica %d: %d records after a committed update, want 1", i, n)
		}
		if rev, _ := st.Revision(); rev != 1 {
			t.Fatalf("replica %d: revision %d, want 1", i, rev)
		}
	}
}

func service(name string) *store.Resource {
	return &store.Resource{ID: "Service/default/" + name, Kind: "Service", Namespace: "default", Name: name, Service: name}
}

func route(name, svc string) *store.Resource {
	return &store.Resource{ID: "Route/default/" + name, Kind: "Route", Namespace: "default", Name: name, Service: svc}
}

// ReferenceChecksAreRangeReads: one replica deletes a Service only when no
// Route names it (a range read), another adds a Route only when the
// Service exists; raced many times, the store never ends with a Route
// naming a missing Service. A store that compared only the keys written
// would let both commit.
func ReferenceChecksAreRangeReads(t *testing.T, e *Env) {
	a, b := e.Open(t), e.Open(t)
	for i := range 20 {
		svc := "s" + strconv.Itoa(i)
		if err := a.Update(func(tx *store.Txn) error { return tx.Put(store.TableResources, service(svc)) }); err != nil {
			t.Fatal(err)
		}
		sync5(t, b)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			_ = a.Update(func(tx *store.Txn) error {
				refs, err := tx.List(store.TableResources, "service", "Route", "default", svc)
				if err != nil || len(refs) > 0 {
					return errors.New("still referred to")
				}
				return tx.Delete(store.TableResources, service(svc).ID)
			})
		}()
		go func() {
			defer wg.Done()
			_ = b.Update(func(tx *store.Txn) error {
				if _, err := tx.Get(store.TableResources, service(svc).ID); err != nil {
					return err
				}
				return tx.Put(store.TableResources, route("r"+svc, svc))
			})
		}()
		wg.Wait()
		sync5(t, a)
		err := a.View(func(r *store.Reader) error {
			_, serr := r.Get(store.TableResources, service(svc).ID)
			_, rerr := r.Get(store.TableResources, route("r"+svc, svc).ID)
			if serr != nil && rerr == nil {
				return fmt.Errorf("round %d: a Route names the deleted Service %s", i, svc)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

type fixedCA struct{ ca *certs.CA }

func (f fixedCA) Current() *certs.CA { return f.ca }

// RacingBootstraps: ten Bootstraps of a one-use token, through three
// replicas (Authorities on three store instances), race: exactly one wins.
func RacingBootstrapsOneWinner(t *testing.T, e *Env) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	var auths []*identity.Authority
	for range 3 {
		a, err := identity.New(identity.Config{Store: e.Open(t), CA: fixedCA{ca}})
		if err != nil {
			t.Fatal(err)
		}
		auths = append(auths, a)
	}
	_, secret, err := auths[0].CreateToken(identity.TokenRequest{Namespace: "default", ServiceAccount: "web", Uses: 1, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://example.org/ns/default/sa/web")
	csrs := make([][]byte, 10)
	for i := range csrs {
		key, err := certs.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if csrs[i], err = certs.NewCSR(key, id); err != nil {
			t.Fatal(err)
		}
	}
	var wins atomic.Int32
	errs := make([]error, 10)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			_, err := auths[i%3].Bootstrap(secret, csrs[i], "inst-"+strconv.Itoa(i))
			if err == nil {
				wins.Add(1)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d of 10 racing Bootstraps of a one-use token won, want 1: %v", wins.Load(), errs)
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, identity.ErrTokenUsedUp) {
			t.Fatalf("a loser's error: %v, want ErrTokenUsedUp", err)
		}
	}
	st := e.Open(t)
	if n := count(t, st, store.TableIssuances); n != 1 {
		t.Fatalf("%d issuance records, want 1", n)
	}
	if n := count(t, st, store.TableCertificates); n != 1 {
		t.Fatalf("%d certificate records, want 1", n)
	}
}

// RevisionMonotonic: Bumps racing through three replicas each get a
// distinct revision, together exactly 1..N, and every replica ends at N.
func RevisionMonotonic(t *testing.T, e *Env) {
	sts := []*store.Store{e.Open(t), e.Open(t), e.Open(t)}
	const per = 10
	var mu sync.Mutex
	var got []uint64
	var wg sync.WaitGroup
	for _, st := range sts {
		wg.Go(func() {
			last := uint64(0)
			for range per {
				var rev uint64
				err := st.Update(func(tx *store.Txn) error {
					var err error
					rev, err = tx.Bump()
					return err
				})
				if err != nil {
					t.Error(err)
					return
				}
				if rev <= last {
					t.Errorf("revision %d after %d on one replica", rev, last)
				}
				last = rev
				mu.Lock()
				got = append(got, rev)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	for i, r := range got {
		if r != uint64(i+1) {
			t.Fatalf("revisions %v: want exactly 1..%d", got, 3*per)
		}
	}
	for i, st := range sts {
		sync5(t, st)
		if rev, _ := st.Revision(); rev != 3*per {
			t.Fatalf("replica %d at revision %d, want %d", i, rev, 3*per)
		}
	}
}

// TooLargeRefused: on etcd a transaction over MaxTxnWrites records is
// refused and writes nothing (bbolt takes any size; MaxWrites is its
// batch size); on every backend MaxWrites leaves room for an Apply.
func TooLargeRefused(t *testing.T, e *Env) {
	st := e.Open(t)
	if st.MaxWrites() < store.MaxApplyObjects+1 {
		t.Fatalf("MaxWrites %d leaves no room for an Apply of %d objects and its revision", st.MaxWrites(), store.MaxApplyObjects)
	}
	if e.Etcd == nil {
		return
	}
	err := st.Update(func(tx *store.Txn) error {
		for i := range st.MaxWrites() + 1 {
			if err := tx.Put(store.TableDenials, &store.Denial{SPIFFEID: strconv.Itoa(i)}); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, store.ErrTxnTooLarge) {
		t.Fatalf("an update of %d records: %v, want ErrTxnTooLarge", st.MaxWrites()+1, err)
	}
	if n := count(t, st, store.TableDenials); n != 0 {
		t.Fatalf("%d records of a refused update", n)
	}
}

// Consistency: the cache matches the backend after writes; on etcd a
// record put behind meshd's back that does not decode is reported.
func Consistency(t *testing.T, e *Env) {
	st := e.Open(t)
	for i := range 5 {
		if err := st.Update(func(tx *store.Txn) error {
			if _, err := tx.Bump(); err != nil {
				return err
			}
			return tx.Put(store.TableProxies, &store.Proxy{InstanceID: "i" + strconv.Itoa(i), Service: "web"})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Update(func(tx *store.Txn) error { return tx.Delete(store.TableProxies, "i0") }); err != nil {
		t.Fatal(err)
	}
	if err := st.CheckConsistency(); err != nil {
		t.Fatal(err)
	}
	if e.Etcd == nil {
		return
	}
	cli, err := e.Etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A write that skips the store's revision key, with a record that
	// does not decode: the cache cannot take it, the check must see it.
	if _, err := cli.Put(ctx, e.Prefix+"t/proxies/i1", "{not json"); err != nil {
		t.Fatal(err)
	}
	probe, _ := json.Marshal(&store.Denial{SPIFFEID: "probe"})
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut(e.Prefix+"t/denials/probe", string(probe)), clientv3.OpPut(e.Prefix+"commit", "test")).Commit(); err != nil {
		t.Fatal(err)
	}
	sync5(t, st) // the probe is in the cache: it came after the bad record
	if n := count(t, st, store.TableDenials); n != 1 {
		t.Fatalf("the probe record did not reach the cache (%d denials)", n)
	}
	if err := st.CheckConsistency(); err == nil || !strings.Contains(err.Error(), "proxies/i1") {
		t.Fatalf("CheckConsistency with an undecodable proxies/i1 in etcd: %v", err)
	} else {
		t.Logf("CheckConsistency: %v", err)
	}
}

// BackupImport: a backup of one store imports into an empty other one
// (either backend) with equal contents, and not into a non-empty one.
func BackupImport(t *testing.T, src, dst *Env) {
	a := src.Open(t)
	for i := range 150 { // more than one import batch
		if err := a.Update(func(tx *store.Txn) error {
			if _, err := tx.Bump(); err != nil {
				return err
			}
			return tx.Put(store.TableCertificates, &store.Certificate{Serial: strconv.Itoa(i), SPIFFEID: "spiffe://td/x"})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Update(func(tx *store.Txn) error { return tx.SetMeta("ca", []byte{0, 1, 2, 0xff, 0xfe}) }); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go func() { _, err := a.Backup(pw); pw.CloseWithError(err) }()
	c, err := store.ReadBackup(pr)
	if err != nil {
		t.Fatal(err)
	}
	b := dst.Open(t)
	if err := b.Import(c); err != nil {
		t.Fatal(err)
	}
	sync5(t, b)
	want, _ := a.Contents()
	got, _ := b.Contents()
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatal("imported contents differ from the backup's source")
	}
	if err := b.CheckConsistency(); err != nil {
		t.Fatal(err)
	}
	if err := b.Import(c); !errors.Is(err, store.ErrNotEmpty) {
		t.Fatalf("import into a non-empty store: %v", err)
	}
}

// PausedExLeaderRefused: a leader that is paused inside a leader-only
// update while its lease expires and another replica is elected cannot
// commit when it resumes.
func PausedExLeaderRefused(t *testing.T, e *Env) {
	a := e.Open(t)
	if e.Etcd == nil {
		if !a.IsLeader() {
			t.Fatal("the one bbolt process is not the leader")
		}
		if err := a.UpdateAsLeader(func(tx *store.Txn) error { return tx.SetMeta("x", []byte("1")) }); err != nil {
			t.Fatal(err)
		}
		return
	}
	b := e.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Campaign(ctx)
	waitFor(t, "a to lead", a.IsLeader)
	go b.Campaign(ctx)
	cli, err := e.Etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	paused := make(chan struct{})
	resume := make(chan struct{})
	done := make(chan error, 1)
	first := true
	go func() {
		done <- a.UpdateAsLeader(func(tx *store.Txn) error {
			if first {
				first = false
				close(paused)
				<-resume
			}
			return tx.SetMeta("ex-leader", []byte("wrote"))
		})
	}()
	<-paused
	// The pause outlives a's lease: it expires (revoked here) and b wins.
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	if _, err := cli.Revoke(rctx, clientv3.LeaseID(a.SessionLease())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to lead", b.IsLeader)
	close(resume)
	if err := <-done; !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("the paused ex-leader's write: %v, want ErrNotLeader", err)
	}
	sync5(t, b)
	if v, _ := b.Meta("ex-leader"); v != nil {
		t.Fatal("the paused ex-leader's write committed")
	}
	if err := b.UpdateAsLeader(func(tx *store.Txn) error { return tx.SetMeta("leader", []byte("b")) }); err != nil {
		t.Fatalf("the new leader's write: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a bound on a hang, not a speed threshold
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// PresenceIsLeasedRecordIsNot: a replica's presence key for a proxy goes
// when its lease does; the proxy's record stays.
func PresenceIsLeasedRecordIsNot(t *testing.T, e *Env) {
	a := e.Open(t)
	if err := a.Update(func(tx *store.Txn) error {
		return tx.Put(store.TableProxies, &store.Proxy{InstanceID: "web-1", Service: "web", Connected: true})
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPresence("web-1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := a.Presence(ctx)
	if err != nil || p["web-1"] == "" {
		t.Fatalf("presence after SetPresence: %v %v", p, err)
	}
	if e.Etcd == nil {
		if err := a.ClearPresence("web-1"); err != nil {
			t.Fatal(err)
		}
		if p, _ := a.Presence(ctx); len(p) != 0 {
			t.Fatalf("presence after ClearPresence: %v", p)
		}
		return
	}
	cli, err := e.Etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := e.Prefix + "presence/web-1"
	wch := cli.Watch(ctx, key, clientv3.WithRev(1))
	// The lease ends (as when the replica dies): the key goes.
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(a.SessionLease())); err != nil {
		t.Fatal(err)
	}
	deleted := false
	for resp := range wch {
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypeDelete {
				deleted = true
			}
		}
		if deleted {
			break
		}
	}
	if !deleted {
		t.Fatalf("no delete of %s after its lease ended: %v", key, ctx.Err())
	}
	b := e.Open(t)
	sync5(t, b)
	if err := b.View(func(r *store.Reader) error {
		_, err := r.Get(store.TableProxies, "web-1")
		return err
	}); err != nil {
		t.Fatalf("the proxy's record after its presence lease ended: %v", err)
	}
	// A replica that lives on puts presence back under its new lease.
	waitFor(t, "presence under a's new lease", func() bool {
		p, err := b.Presence(ctx)
		return err == nil && p["web-1"] != ""
	})
	if err := a.ClearPresence("web-1"); err != nil {
		t.Fatal(err)
	}
	if p, _ := b.Presence(ctx); len(p) != 0 {
		t.Fatalf("presence after ClearPresence: %v", p)
	}
}

// WatchResumesAfterCompaction: a replica cut off from etcd while others
// write and etcd compacts past its revision reloads when it is back,
// and has every write.
func WatchResumesAfterCompaction(t *testing.T, e *Env) {
	if e.Etcd == nil {
		t.Skip("bbolt has no watch")
	}
	relay := NewRelay(t, e.Etcd.Endpoints[0])
	a := e.Open(t)
	b := e.OpenVia(t, "http://"+relay.Addr())
	put := func(n string) {
		if err := a.Update(func(tx *store.Txn) error {
			if _, err := tx.Bump(); err != nil {
				return err
			}
			return tx.Put(store.TableDenials, &store.Denial{SPIFFEID: n})
		}); err != nil {
			t.Fatal(err)
		}
	}
	put("before")
	sync5(t, b)
	relay.Cut(true) // b's watch hears nothing from here
	for i := range 5 {
		put("during-" + strconv.Itoa(i))
	}
	cli, err := e.Etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	reloads := b.CacheReloads()
	relay.Cut(false)
	if n := count(t, b, store.TableDenials); n != 6 {
		t.Fatalf("after the compaction the cut-off replica has %d records, want 6", n)
	}
	if err := b.CheckConsistency(); err != nil {
		t.Fatal(err)
	}
	if b.CacheReloads() != reloads+1 {
		t.Fatalf("cache reloads %d → %d: the watch did not reload after the compaction", reloads, b.CacheReloads())
	}
}

// Relay is a TCP relay in front of etcd (or any TCP server) that a test
// can cut: while cut, open connections are closed and new ones refused.
// It is how tests make etcd unreachable for one meshd or store.
type Relay struct {
	l     net.Listener
	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

// NewRelay relays 127.0.0.1:0 to target (host:port, or an http:// URL as
// etcd lists its endpoints); it stops with the test.
func NewRelay(t testing.TB, target string) *Relay {
	u := target
	if i := len("http://"); len(u) > i && u[:i] == "http://" {
		u = u[i:]
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{l: l, conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); r.Cut(true); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			if r.down {
				r.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.DialTimeout("tcp", u, 5*time.Second)
			if err != nil {
				r.mu.Unlock()
				c.Close()
				continue
			}
			r.conns[c], r.conns[up] = true, true
			r.mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(up, c); up.Close(); c.Close() })
			wg.Go(func() { _, _ = io.Copy(c, up); up.Close(); c.Close() })
		}
	})
	return r
}

// Addr is the relay's own address.
func (r *Relay) Addr() string { return r.l.Addr().String() }

// Cut cuts the relay (down) or lets connections through again.
func (r *Relay) Cut(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
	if down {
		for c := range r.conns {
			c.Close()
		}
		r.conns = map[net.Conn]bool{}
	}
}
