package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"minimesh/internal/fsguard"
)

const (
	metaBucket       = "meta"
	metaSchemaKey    = "schema_version"
	metaRevisionKey  = "revision"
	defaultLockWait  = 2 * time.Second
	defaultFileMode  = 0o600
	maxRecordPayload = 16 << 20
)

// Config configures Open.
type Config struct {
	// Path of the bbolt data file. Required.
	Path string
	// LockTimeout bounds the wait for the file lock, so a second meshd on
	// the same data dir fails fast instead of hanging. Default 2s.
	LockTimeout time.Duration
	Logger      *slog.Logger
}

// Store is memdb for reads, bbolt for durability. Safe for concurrent use.
type Store struct {
	db  *bolt.DB
	mem *memdb.MemDB
	log *slog.Logger
}

// Open opens (creating when absent) the data file, checks its schema version
// and rebuilds memdb from it. A damaged file is refused with ErrCorrupt and
// left as it is.
func Open(cfg Config) (st *Store, err error) {
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
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
	s := &Store{db: db, log: cfg.Logger}
	defer func() {
		if st == nil {
			_ = db.Close()
		}
	}()
	if err := s.verifyPages(); err != nil {
		return nil, err
	}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// verifyPages walks every page of the file (bbolt's consistency check).
func (s *Store) verifyPages() error {
	return s.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() { // drained to the end: the checker is a goroutine
			if len(errs) < 10 {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, s.db.Path(), errors.Join(errs...))
		}
		return nil
	})
}

// init checks or writes the schema version, creates buckets and loads memdb.
func (s *Store) init() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
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
	mem, err := memdb.NewMemDB(memSchema())
	if err != nil {
		return fmt.Errorf("store: memdb schema: %w", err)
	}
	mtx := mem.Txn(true)
	defer mtx.Abort()
	err = s.db.View(func(tx *bolt.Tx) error {
		for name, t := range tables {
			err := tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error {
				rec, err := t.decode(v)
				if err != nil {
					return fmt.Errorf("%w: %s/%s: %v", ErrCorrupt, name, k, err)
				}
				return mtx.Insert(name, rec)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: load: %w", err)
	}
	mtx.Commit()
	s.mem = mem
	return nil
}

// Close closes the data file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Update runs fn in one write transaction. When fn returns nil, the bbolt
// transaction is committed and fsynced first, then memdb; otherwise nothing
// changes. Writes are serialized.
func (s *Store) Update(fn func(tx *Txn) error) error {
	// Lock order: memdb, then bbolt. Both allow one writer at a time.
	mtx := s.mem.Txn(true)
	defer mtx.Abort()
	btx, err := s.db.Begin(true)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer func() { _ = btx.Rollback() }()
	tx := &Txn{Reader: Reader{mem: mtx}, bolt: btx}
	if err := fn(tx); err != nil {
		return err
	}
	if !tx.dirty {
		return nil
	}
	if err := btx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	mtx.Commit()
	return nil
}

// View runs fn against a consistent snapshot of memdb.
func (s *Store) View(fn func(r *Reader) error) error {
	mtx := s.mem.Txn(false)
	defer mtx.Abort()
	return fn(&Reader{mem: mtx})
}

// Meta returns a metadata value kept in bbolt (nil when absent).
func (s *Store) Meta(key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(metaBucket)).Get([]byte(key)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: meta %s: %w", key, err)
	}
	return out, nil
}

// Revision is the store's revision: it grows by one with every committed
// write transaction that calls Txn.Bump.
func (s *Store) Revision() (uint64, error) {
	v, err := s.Meta(metaRevisionKey)
	if err != nil || v == nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// Backup writes a consistent copy of the data file to w, taken live.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("store: backup: %w", err)
	}
	return n, nil
}

// Path is the data file's path.
func (s *Store) Path() string { return s.db.Path() }

// Reader reads memdb. Records it returns are shared: never modify them,
// copy first.
type Reader struct {
	mem *memdb.Txn
}

// Get returns the record with the given key, or ErrNotFound.
func (r *Reader) Get(tbl, key string) (Record, error) {
	if _, err := lookupTable(tbl); err != nil {
		return nil, err
	}
	raw, err := r.mem.First(tbl, "id", key)
	if err != nil {
		return nil, fmt.Errorf("store: get %s/%s: %w", tbl, key, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, tbl, key)
	}
	return raw.(Record), nil
}

// List returns every record of a table whose index matches args, in index
// order. List(tbl, "id") returns the whole table.
func (r *Reader) List(tbl, index string, args ...any) ([]Record, error) {
	if _, err := lookupTable(tbl); err != nil {
		return nil, err
	}
	it, err := r.mem.Get(tbl, index, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list %s by %s: %w", tbl, index, err)
	}
	var out []Record
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(Record))
	}
	return out, nil
}

// Txn is a write transaction: reads see its own writes.
type Txn struct {
	Reader
	bolt  *bolt.Tx
	dirty bool
}

// Put writes a record, replacing any with the same key.
func (t *Txn) Put(tbl string, rec Record) error {
	if _, err := lookupTable(tbl); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("store: encode %s/%s: %w", tbl, rec.Key(), err)
	}
	if len(b) > maxRecordPayload {
		return fmt.Errorf("store: %s/%s: record of %d bytes is over the %d byte limit", tbl, rec.Key(), len(b), maxRecordPayload)
	}
	if err := t.bolt.Bucket([]byte(tbl)).Put([]byte(rec.Key()), b); err != nil {
		return fmt.Errorf("store: put %s/%s: %w", tbl, rec.Key(), err)
	}
	if err := t.mem.Insert(tbl, rec); err != nil {
		return fmt.Errorf("store: index %s/%s: %w", tbl, rec.Key(), err)
	}
	t.dirty = true
	return nil
}

// Delete removes a record; deleting a missing record is not an error.
func (t *Txn) Delete(tbl, key string) error {
	rec, err := t.Get(tbl, key)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := t.bolt.Bucket([]byte(tbl)).Delete([]byte(key)); err != nil {
		return fmt.Errorf("store: delete %s/%s: %w", tbl, key, err)
	}
	if err := t.mem.Delete(tbl, rec); err != nil {
		return fmt.Errorf("store: unindex %s/%s: %w", tbl, key, err)
	}
	t.dirty = true
	return nil
}

// SetMeta writes a metadata value.
func (t *Txn) SetMeta(key string, v []byte) error {
	if err := t.bolt.Bucket([]byte(metaBucket)).Put([]byte(key), v); err != nil {
		return fmt.Errorf("store: meta %s: %w", key, err)
	}
	t.dirty = true
	return nil
}

// Meta reads a metadata value within the transaction.
func (t *Txn) Meta(key string) []byte {
	if v := t.bolt.Bucket([]byte(metaBucket)).Get([]byte(key)); v != nil {
		return append([]byte(nil), v...)
	}
	return nil
}

// Bump increments the store revision and returns the new value.
func (t *Txn) Bump() (uint64, error) {
	var rev uint64
	if v := t.Meta(metaRevisionKey); v != nil {
		rev = binary.BigEndian.Uint64(v)
	}
	rev++
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], rev)
	return rev, t.SetMeta(metaRevisionKey, b[:])
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

// CheckConsistency compares every table in memdb with bbolt, record by
// record: after a restart or a crash they must agree.
func (s *Store) CheckConsistency() error {
	mtx := s.mem.Txn(false)
	defer mtx.Abort()
	return s.db.View(func(tx *bolt.Tx) error {
		for name := range tables {
			inBolt := 0
			err := tx.Bucket([]byte(name)).ForEach(func(k, v []byte) error {
				inBolt++
				raw, err := mtx.First(name, "id", string(k))
				if err != nil || raw == nil {
					return fmt.Errorf("store: %s/%s is in bbolt but not in memdb", name, k)
				}
				b, err := json.Marshal(raw)
				if err != nil {
					return err
				}
				if string(b) != string(v) {
					return fmt.Errorf("store: %s/%s differs between bbolt and memdb", name, k)
				}
				return nil
			})
			if err != nil {
				return err
			}
			it, err := mtx.Get(name, "id")
			if err != nil {
				return err
			}
			inMem := 0
			for raw := it.Next(); raw != nil; raw = it.Next() {
				inMem++
			}
			if inMem != inBolt {
				return fmt.Errorf("store: table %s has %d records in memdb and %d in bbolt", name, inMem, inBolt)
			}
		}
		return nil
	})
}
