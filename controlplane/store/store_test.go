package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"minimesh/controlplane/store"
)

func open(t *testing.T, path string) *store.Store {
	t.Helper()
	st, err := store.Open(store.Config{Path: path, LockTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return st
}

func TestWritesSurviveReopenAndMemdbMatchesBolt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshd.db")
	st := open(t, path)
	err := st.Update(func(tx *store.Txn) error {
		if err := tx.Put(store.TableTokens, &store.Token{ID: "t1", SPIFFEID: "spiffe://td/ns/a/sa/b", UsesLeft: 3}); err != nil {
			return err
		}
		if err := tx.Put(store.TableProxies, &store.Proxy{InstanceID: "i1", Service: "web", SPIFFEID: "spiffe://td/ns/a/sa/web"}); err != nil {
			return err
		}
		_, err := tx.Bump()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = open(t, path)
	defer st.Close()
	err = st.View(func(r *store.Reader) error {
		rec, err := r.Get(store.TableTokens, "t1")
		if err != nil {
			return err
		}
		if got := rec.(*store.Token).UsesLeft; got != 3 {
			t.Errorf("UsesLeft = %d after reopen, want 3", got)
		}
		byService, err := r.List(store.TableProxies, "service", "web")
		if err != nil {
			return err
		}
		if len(byService) != 1 {
			t.Errorf("proxies by service web = %d, want 1", len(byService))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rev, _ := st.Revision(); rev != 1 {
		t.Errorf("Revision = %d, want 1", rev)
	}
}

func TestFailedUpdateChangesNothing(t *testing.T) {
	st := open(t, filepath.Join(t.TempDir(), "meshd.db"))
	defer st.Close()
	boom := errors.New("boom")
	err := st.Update(func(tx *store.Txn) error {
		if err := tx.Put(store.TableTokens, &store.Token{ID: "t1"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v, want boom", err)
	}
	err = st.View(func(r *store.Reader) error {
		_, err := r.Get(store.TableTokens, "t1")
		return err
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after failed update = %v, want ErrNotFound", err)
	}
}

func TestSecondOpenFailsFastWithClearError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshd.db")
	st := open(t, path)
	defer st.Close()
	_, err := store.Open(store.Config{Path: path, LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestUnknownSchemaVersionRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshd.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		return b.Put([]byte("schema_version"), []byte("99"))
	})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := store.Open(store.Config{Path: path}); !errors.Is(err, store.ErrSchema) {
		t.Fatalf("Open = %v, want ErrSchema", err)
	}
}

func TestGarbageFileRefusedAndLeftAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshd.db")
	garbage := make([]byte, 8192)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(store.Config{Path: path}); err == nil {
		t.Fatal("Open of a garbage file succeeded")
	}
	after, _ := os.ReadFile(path)
	if string(after) != string(garbage) {
		t.Fatal("Open overwrote a corrupt data file")
	}
}

func TestCheckDataDirRefusesOpenPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := store.CheckDataDir(dir); err != nil {
		t.Fatalf("fresh dir: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := store.CheckDataDir(dir); err == nil {
		t.Fatal("CheckDataDir accepted a 0755 data dir")
	}
}
