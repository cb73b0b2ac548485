package storetest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"minimesh/controlplane/store"
	"minimesh/controlplane/store/storetest"
)

// embedded is one in-process etcd for the whole package (started once:
// every test has a prefix of its own).
var embedded *storetest.Etcd

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "storetest-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	embedded, err = storetest.StartEmbedded(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "embedded etcd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	embedded.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestBbolt(t *testing.T) { storetest.Run(t, storetest.Bbolt) }

func TestEtcdEmbedded(t *testing.T) { storetest.Run(t, storetest.OnEtcd(embedded)) }

// TestBackupBboltToEtcd: a bbolt store's backup imports into etcd.
func TestBackupBboltToEtcd(t *testing.T) {
	storetest.BackupImport(t, storetest.Bbolt(t), storetest.OnEtcd(embedded)(t))
}

// TestEtcdBinary runs the suite against Debian's etcd (etcd-server 3.4),
// the etcd an operator may run: skipped when it is not installed, failed
// under CI=true (.ci/run installs it).
func TestEtcdBinary(t *testing.T) {
	bin := storetest.EtcdBinary()
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no etcd binary (apt-get install etcd-server); CI must run this test")
		}
		t.Skip("no etcd binary (apt-get install etcd-server)")
	}
	e, err := storetest.StartBinary(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	storetest.Run(t, storetest.OnEtcd(e))
}

// TestEtcdNoSpaceNamesTheFix: when etcd raises its NOSPACE alarm, a write
// fails with store.ErrNoSpace, whose message names etcd and the fix.
func TestEtcdNoSpaceNamesTheFix(t *testing.T) {
	e, err := storetest.StartEmbeddedQuota(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	st, err := store.Open(store.Config{Etcd: &store.EtcdConfig{Endpoints: e.Endpoints}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	big := bytes.Repeat([]byte("x"), 512<<10)
	for i := range 100 {
		err = st.Update(func(tx *store.Txn) error { return tx.SetMeta("big-"+strconv.Itoa(i), big) })
		if err != nil {
			break
		}
	}
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("writes past etcd's quota: %v, want ErrNoSpace", err)
	}
	for _, want := range []string{"etcd", "NOSPACE", "etcdctl defrag", "--quota-backend-bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the NOSPACE error does not say %q: %v", want, err)
		}
	}
}

// TestEtcdPresenceRetried: a proxy's presence key whose put failed (etcd
// unreachable for a moment) is put again once etcd answers, so the leader
// does not take the live stream for one that ended; one cleared meanwhile
// (the stream ended) is not put back.
func TestEtcdPresenceRetried(t *testing.T) {
	rl := storetest.NewRelay(t, embedded.Endpoints[0])
	prefix := fmt.Sprintf("/presence-%d/", os.Getpid())
	open := func(endpoint, replica string) *store.Store {
		st, err := store.Open(store.Config{Etcd: &store.EtcdConfig{Endpoints: []string{endpoint}, Prefix: prefix, Replica: replica,
			RequestTimeout: 500 * time.Millisecond, DialTimeout: time.Second, SessionTTL: 30}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	st := open("http://"+rl.Addr(), "r0")
	watcher := open(embedded.Endpoints[0], "r1")

	rl.Cut(true)
	if err := st.SetPresence("live"); err == nil {
		t.Fatal("a presence put with etcd cut off succeeded")
	}
	if err := st.SetPresence("ended"); err == nil {
		t.Fatal("a presence put with etcd cut off succeeded")
	}
	_ = st.ClearPresence("ended") // the stream ended while etcd was away
	rl.Cut(false)

	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := watcher.Presence(context.Background())
		if err == nil && got["live"] == "r0" {
			if _, ok := got["ended"]; ok {
				t.Fatalf("the presence of a stream that ended was put back: %v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failed presence put was not retried once etcd answered: %v (%v)", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And it stays away after a few more retry ticks.
	time.Sleep(2500 * time.Millisecond)
	if got, err := watcher.Presence(context.Background()); err != nil || got["ended"] != "" {
		t.Fatalf("presence after the retries: %v, %v", got, err)
	}
}
