package storetest_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

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
