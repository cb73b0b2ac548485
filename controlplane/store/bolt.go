package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"minimesh/internal/fsguard"
)

const (
	metaBucket      = "meta"
	metaSchemaKey   = "schema_version"
	defaultLockWait = 2 * time.Second
	defaultFileMode = 0o600
	// boltMaxWrites: bbolt has no limit of its own; Prune and the push
	// server batch by MaxWrites, and a single file takes big batches well.
	boltMaxWrites = 5000
)

// boltBackend is the embedded default: one bbolt file, one process.
type boltBackend struct {
	db *bolt.DB
	// presence: the one process's streams, in memory (instance → "local").
	presence    sync.Map
	replicaInfo atomic.Pointer[string]
}

// openBolt opens (creating when absent) the data file, checks its schema
// version and rebuilds memdb from it. A damaged file is refused with
// ErrCorrupt and left as it is.
func openBolt(cfg Config) (st *Store, err error) {
	// bbolt trusts its pages: on a damaged file it panics (or faults) instead
	// of returning an error. Turn both into ErrCorrupt during open.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			st, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, cfg.Path, r)
		}
	}()
	if cfg.Path == "" {
		return nil, errors.New("store: Config.Path is required")
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = defaultLockWait
	}
	if err := CheckFile(cfg.Path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(cfg.Path, defaultFileMode, &bolt.Options{Timeout: cfg.LockTimeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s", ErrLocked, cfg.Path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, cfg.Path, err)
	case err != nil:
		return nil, fmt.Errorf("store: open %s: %w", cfg.Path, err)
	}
	b := &boltBackend{db: db}
	s := &Store{be: b, log: cfg.Logger}
	defer func() {
		if st == nil {
			_ = db.Close()
		}
	}()
	if err := b.verifyPages(); err != nil {
		return nil, err
	}
	if err := b.init(s); err != nil {
		return nil, err
	}
	return s, nil
}

// verifyPages walks every page of the file (bbolt's consistency check).
func (b *boltBackend) verifyPages() error {
	return b.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() { // drained to the end: the checker is a goroutine
			if len(errs) < 10 {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, b.db.Path(), errors.Join(errs...))
		}
		return nil
	})
}

// init checks or writes the schema version, creates buckets and loads memdb.
func (b *boltBackend) init(s *Store) error {
	err := b.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return err
		}
		if v := meta.Get([]byte(metaSchemaKey)); v != nil {
			n, err := strconv.Atoi(string(v))
			if err != nil || n != SchemaVersion {
				return fmt.Errorf("%w: data file has %q, this meshd reads %d", ErrSchema, v, SchemaVersion)
			}
		} else if err := meta.Put([]byte(metaSchemaKey), []byte(strconv.Itoa(SchemaVersion))); err != nil {
			return err
		}
		for name := range tables {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: init: %w", err)
	}
	mem, err := newMem()
	if err != nil {
		return err
	}
	mtx := mem.Txn(true)
	defer mtx.Abort()
	contents, err := b.contents()
	if err != nil {
		return fmt.Errorf("store: load: %w", err)
	}
	for tbl, recs := range contents {
		for k, v := range recs {
			if err := applyWrite(mtx, write{tbl: tbl, key: k, val: v}); err != nil {
				return fmt.Errorf("store: load: %w", err)
			}
		}
	}
	mtx.Commit()
	s.mem = mem
	return nil
}

// contents reads every record and meta value (except the schema version)
// of the file: table → key → value, "" for meta.
func (b *boltBackend) contents() (map[string]map[string][]byte, error) {
	out := map[string]map[string][]byte{"": {}}
	err := b.db.View(func(tx *bolt.Tx) error {
		for name := range tables {
			m := map[string][]byte{}
			out[name] = m
			if err := tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error {
				m[string(k)] = append([]byte(nil), v...)
				return nil
			}); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte(metaBucket)).ForEach(func(k, v []byte) error {
			if string(k) != metaSchemaKey && v != nil {
				out[""][string(k)] = append([]byte(nil), v...)
			}
			return nil
		})
	})
	return out, err
}

func (b *boltBackend) close() error {
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

func (b *boltBackend) path() string               { return b.db.Path() }
func (b *boltBackend) maxWrites() int             { return boltMaxWrites }
func (b *boltBackend) sync(context.Context) error { return nil }

func (b *boltBackend) campaign(context.Context) error { return nil }
func (b *boltBackend) isLeader() bool                 { return true }
func (b *boltBackend) sessionLease() int64            { return 0 }
func (b *boltBackend) cacheReloads() int64            { return 0 }

func (b *boltBackend) replica() string { return "local" }

func (b *boltBackend) setReplicaInfo(v string) error {
	b.replicaInfo.Store(&v)
	return nil
}

func (b *boltBackend) replicas(context.Context) (map[string]string, error) {
	v := ""
	if p := b.replicaInfo.Load(); p != nil {
		v = *p
	}
	return map[string]string{"local": v}, nil
}

func (b *boltBackend) presenceMap() *sync.Map { return &b.presence }

func (b *boltBackend) setPresence(inst string) error {
	b.presenceMap().Store(inst, "local")
	return nil
}

func (b *boltBackend) clearPresence(inst string) error {
	b.presenceMap().Delete(inst)
	return nil
}

func (b *boltBackend) presenceAll(context.Context) (map[string]string, error) {
	out := map[string]string{}
	b.presenceMap().Range(func(k, v any) bool { out[k.(string)] = v.(string); return true })
	return out, nil
}

// update runs fn against a memdb write transaction (which also serializes
// writers); its writes go to bbolt, committed and fsynced, then memdb
// commits. A failed bbolt commit aborts memdb, so memdb never shows an
// unacknowledged write. There is one process, always the leader.
func (b *boltBackend) update(s *Store, fn func(tx *Txn) error, _ bool, _ time.Duration) error {
	mtx := s.mem.Txn(true)
	defer mtx.Abort()
	// No cap on bbolt: a file takes any transaction (a legacy token's
	// Issued map moving into records can be thousands). MaxWrites is the
	// batch size callers chunk by.
	tx := newTxn(mtx, math.MaxInt)
	if err := fn(tx); err != nil {
		return err
	}
	if len(tx.list) == 0 {
		return nil
	}
	err := b.db.Update(func(btx *bolt.Tx) error {
		for _, w := range tx.list {
			bk := btx.Bucket([]byte(metaBucket))
			if w.tbl != "" {
				bk = btx.Bucket([]byte(w.tbl))
			}
			var err error
			if w.val == nil {
				err = bk.Delete([]byte(w.key))
			} else {
				err = bk.Put([]byte(w.key), w.val)
			}
			if err != nil {
				return fmt.Errorf("%s/%s: %w", w.tbl, w.key, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	mtx.Commit()
	return nil
}

// checkConsistency compares memdb with the file.
func (b *boltBackend) checkConsistency(s *Store) error {
	mtx := s.mem.Txn(false)
	defer mtx.Abort()
	want, err := b.contents()
	if err != nil {
		return err
	}
	return compareCache(mtx, want, "bbolt")
}

// CheckDataDir makes dir (0700) if needed and refuses one meshd cannot
// trust to be its own: a symbolic link anywhere on its path, a directory
// owned by another user or that group or others can read or write, and in
// it a data file (meshd.db) or operator credential (operator/) that is a
// symbolic link, not ours, or readable by others. Whoever owns the data dir
// can read the CA keys and the operator credential meshd writes there.
func CheckDataDir(dir string) error {
	d, err := fsguard.OpenDir(dir, true)
	if err != nil {
		return fmt.Errorf("store: data dir (--data-dir): %w", err)
	}
	defer d.Close()
	if m := d.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("store: data dir %s has mode %v: it holds the CA keys, so it must not be readable by group or others (chmod 700)", d.Path(), m)
	}
	if _, err := d.Check(dataFileName, true); err != nil {
		return fmt.Errorf("store: data file: %w", err)
	}
	op, err := d.OpenDir(operatorDirName, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: operator credential dir: %w", err)
	}
	defer op.Close()
	for _, name := range []string{"svid.pem", "svid_key.pem", "bundle.pem"} {
		if _, err := op.Check(name, true); err != nil {
			return fmt.Errorf("store: operator credential: %w", err)
		}
	}
	return nil
}

// The data file and the operator credential's directory in a data dir, as
// controlplane names them.
const (
	dataFileName    = "meshd.db"
	operatorDirName = "operator"
)

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
