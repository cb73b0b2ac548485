package storetest_test

import (
	"fmt"
	"os"
	"testing"

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
