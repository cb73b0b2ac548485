package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

const (
	metaRevisionKey  = "revision"
	maxRecordPayload = 16 << 20
	// tableMeta is memdb's copy of the metadata values (Store.Meta), so
	// that both backends read them from the cache and a transaction sees
	// its own SetMeta.
	tableMeta = "_meta"
	// tableCache holds one row: the etcd revision the cache reflects.
	tableCache = "_cache"
)

// Limits of one write transaction. etcd refuses a Txn of more than 128
// operations or 1.5 MiB (its defaults, --max-txn-ops and
// --max-request-bytes); the store keeps a margin for its own compares and
// the revision key. An Apply is held to MaxApplyObjects and MaxApplyBytes
// on every backend, so a configuration that applies on bbolt also applies
// on etcd.
const (
	MaxTxnWrites    = 120
	MaxTxnBytes     = 1400 << 10
	MaxApplyObjects = 100
	MaxApplyBytes   = 1 << 20
)

// Config configures Open.
type Config struct {
	// Path of the bbolt data file. Required unless Etcd is set.
	Path string
	// LockTimeout bounds the wait for the file lock, so a second meshd on
	// the same data dir fails fast instead of hanging. Default 2s.
	LockTimeout time.Duration
	// Etcd, when set, keeps the state in etcd instead of a bbolt file.
	Etcd   *EtcdConfig
	Logger *slog.Logger
}

// backend makes the cache's writes durable. The Store owns the cache
// (memdb); a backend loads it at open and commits what an Update wrote.
type backend interface {
	// update runs one Update; see boltBackend.update and etcdBackend.update.
	// within, when positive, bounds the wait for the local write lock
	// and every etcd request (else each request gets RequestTimeout).
	update(s *Store, fn func(tx *Txn) error, leader bool, within time.Duration) error
	// sync waits until the cache holds every write committed before it was
	// called (a no-op on bbolt, where the cache is the only writer's).
	sync(ctx context.Context) error
	checkConsistency(s *Store) error
	maxWrites() int
	path() string
	close() error
	campaign(ctx context.Context) error
	isLeader() bool
	setPresence(instance string) error
	clearPresence(instance string) error
	presenceAll(ctx context.Context) (map[string]string, error)
	sessionLease() int64
	cacheReloads() int64
	replica() string
	setReplicaInfo(v string) error
	replicas(ctx context.Context) (map[string]string, error)
}

// Store is memdb for reads, a backend (bbolt or etcd) for durability.
// Safe for concurrent use.
type Store struct {
	be  backend
	mem *memdb.MemDB
	log *slog.Logger
}

// Open opens the store: a bbolt file (Config.Path) or an etcd prefix
// (Config.Etcd), and loads memdb from it.
func Open(cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	open := openBolt
	if cfg.Etcd != nil {
		open = openEtcd
	}
	s, err := open(cfg)
	if err != nil {
		return nil, err
	}
	if v, _ := s.Meta(restoreMarkerKey); v != nil {
		_ = s.Close()
		return nil, fmt.Errorf("%w: %s holds an interrupted restore; empty it and restore again", ErrCorrupt, s.Path())
	}
	return s, nil
}

// Campaign runs for leader until ctx ends (etcd: concurrency.Election on
// this replica's session lease, again after a lost lease). On bbolt the
// one process is always the leader and Campaign returns at once.
func (s *Store) Campaign(ctx context.Context) error { return s.be.campaign(ctx) }

// IsLeader reports whether this replica is the leader now.
func (s *Store) IsLeader() bool { return s.be.isLeader() }

// SetPresence records that a proxy instance's stream is on this replica:
// on etcd a key presence/INSTANCE → replica under this replica's session
// lease, so it goes when the replica does; the proxy's record is never
// leased. On bbolt it is kept in memory.
func (s *Store) SetPresence(instance string) error { return s.be.setPresence(instance) }

// ClearPresence removes this replica's presence claim for an instance.
func (s *Store) ClearPresence(instance string) error { return s.be.clearPresence(instance) }

// Presence returns every instance with a presence key and its replica.
func (s *Store) Presence(ctx context.Context) (map[string]string, error) {
	return s.be.presenceAll(ctx)
}

// Replica is this replica's name ("local" on bbolt).
func (s *Store) Replica() string { return s.be.replica() }

// SetReplicaInfo announces this replica as live, with v (its version and
// the schemas it reads): on etcd the key replicas/NAME under the replica's
// session lease, put again with every new lease, so it vanishes when the
// replica dies. On bbolt the one process is the only replica.
func (s *Store) SetReplicaInfo(v string) error { return s.be.setReplicaInfo(v) }

// Replicas returns every live replica's name and announced value (a
// linearizable read on etcd).
func (s *Store) Replicas(ctx context.Context) (map[string]string, error) { return s.be.replicas(ctx) }

// CacheReloads counts the cache's reloads since open (a watch that fell
// behind an etcd compaction); 0 on bbolt.
func (s *Store) CacheReloads() int64 { return s.be.cacheReloads() }

// SessionLease is the etcd lease of this replica's session (0 on bbolt):
// presence keys and the leadership live under it.
func (s *Store) SessionLease() int64 { return s.be.sessionLease() }

func newMem() (*memdb.MemDB, error) {
	mem, err := memdb.NewMemDB(memSchema())
	if err != nil {
		return nil, fmt.Errorf("store: memdb schema: %w", err)
	}
	return mem, nil
}

// Close releases the backend.
func (s *Store) Close() error { return s.be.close() }

// Update runs fn in one write transaction: all of fn's writes commit, or
// none. fn may run more than once (on etcd, a concurrent write by another
// replica makes it run again on the newer state): it must act only through
// tx, with no signing, logging, channel sends or writes to anything but tx
// and variables it resets at its start.
func (s *Store) Update(fn func(tx *Txn) error) error { return s.be.update(s, fn, false, 0) }

// UpdateWithin is Update that gives up after about d on etcd: waiting for
// this replica's other writes and each etcd request are bounded by d, and
// running out is ErrUnavailable. It is for a caller that has something
// better to do than wait for etcd's whole RequestTimeout (Renew queues its
// record). The write may still commit after it gave up. On bbolt it is
// Update.
func (s *Store) UpdateWithin(d time.Duration, fn func(tx *Txn) error) error {
	return s.be.update(s, fn, false, d)
}

// UpdateAsLeader is Update for the singletons (rotation phases, operator
// credential re-issue, forgetting and pruning records): it fails with
// ErrNotLeader unless this replica is the leader, and on etcd the commit
// also compares the leader's election key, so a replica that lost the
// leadership while paused cannot commit.
func (s *Store) UpdateAsLeader(fn func(tx *Txn) error) error { return s.be.update(s, fn, true, 0) }

// Sync waits (at most until ctx ends) until the cache holds every write
// committed before the call: reads after it are linearizable. On bbolt it
// returns at once.
func (s *Store) Sync(ctx context.Context) error { return s.be.sync(ctx) }

// MaxWrites is the most records one Update may write on this backend.
func (s *Store) MaxWrites() int { return s.be.maxWrites() }

// View runs fn against a consistent snapshot of memdb.
func (s *Store) View(fn func(r *Reader) error) error {
	mtx := s.mem.Txn(false)
	defer mtx.Abort()
	return fn(&Reader{mem: mtx})
}

// ViewFresh is View that reads through on a miss: when fn fails (a token
// or record not found, say) on etcd, it waits until the cache holds every
// write committed before the call (Sync, at most 5 s) and runs fn again,
// so a record written through another replica a moment ago is found. On
// bbolt it is View.
func (s *Store) ViewFresh(fn func(r *Reader) error) error {
	err := s.View(fn)
	if _, local := s.be.(*boltBackend); err == nil || local {
		return err
	}
	if serr := s.Sync(context.Background()); serr != nil {
		return err
	}
	return s.View(fn)
}

// Meta returns a metadata value (nil when absent).
func (s *Store) Meta(key string) ([]byte, error) {
	mtx := s.mem.Txn(false)
	defer mtx.Abort()
	return metaOf(mtx, key), nil
}

func metaOf(mtx *memdb.Txn, key string) []byte {
	raw, err := mtx.First(tableMeta, "id", key)
	if err != nil || raw == nil {
		return nil
	}
	return append([]byte(nil), raw.(*metaEntry).Value...)
}

// Revision is the store's revision: it grows by one with every committed
// write transaction that calls Txn.Bump.
func (s *Store) Revision() (uint64, error) {
	v, err := s.Meta(metaRevisionKey)
	if err != nil || len(v) != 8 {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// Path is the data file's path, or the etcd endpoints and prefix.
func (s *Store) Path() string { return s.be.path() }

// CheckConsistency compares every table of memdb with the backend, record
// by record: bbolt's file, or etcd at the revision the cache reflects.
func (s *Store) CheckConsistency() error { return s.be.checkConsistency(s) }

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

// write is one change of a transaction: a record (tbl set) or a metadata
// value (tbl empty), val nil for a delete.
type write struct {
	tbl, key string
	val      []byte
}

// Txn is a write transaction: reads see its own writes, which it collects
// for the backend.
type Txn struct {
	Reader
	writes map[[2]string]int // (tbl, key) → index in list
	list   []write
	bytes  int
	max    int
}

func newTxn(mtx *memdb.Txn, max int) *Txn {
	return &Txn{Reader: Reader{mem: mtx}, writes: map[[2]string]int{}, max: max}
}

func (t *Txn) record(w write) error {
	k := [2]string{w.tbl, w.key}
	if i, ok := t.writes[k]; ok {
		t.bytes += len(w.val) - len(t.list[i].val)
		t.list[i] = w
		return nil
	}
	if len(t.list) >= t.max {
		return fmt.Errorf("%w: more than %d records in one transaction", ErrTxnTooLarge, t.max)
	}
	t.writes[k] = len(t.list)
	t.list = append(t.list, w)
	t.bytes += len(w.key) + len(w.val)
	return nil
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
	if err := t.record(write{tbl: tbl, key: rec.Key(), val: b}); err != nil {
		return err
	}
	if err := t.mem.Insert(tbl, rec); err != nil {
		return fmt.Errorf("store: index %s/%s: %w", tbl, rec.Key(), err)
	}
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
	if err := t.record(write{tbl: tbl, key: key}); err != nil {
		return err
	}
	if err := t.mem.Delete(tbl, rec); err != nil {
		return fmt.Errorf("store: unindex %s/%s: %w", tbl, key, err)
	}
	return nil
}

// SetMeta writes a metadata value.
func (t *Txn) SetMeta(key string, v []byte) error {
	v = append([]byte(nil), v...)
	if err := t.record(write{key: key, val: v}); err != nil {
		return err
	}
	if err := t.mem.Insert(tableMeta, &metaEntry{Key: key, Value: v}); err != nil {
		return fmt.Errorf("store: meta %s: %w", key, err)
	}
	return nil
}

// MaxWrites is the most records this transaction may write.
func (t *Txn) MaxWrites() int { return t.max }

// raw applies an encoded write (Import).
func (t *Txn) raw(w write) error {
	if err := t.record(w); err != nil {
		return err
	}
	return applyWrite(t.mem, w)
}

// Meta reads a metadata value within the transaction.
func (t *Txn) Meta(key string) []byte { return metaOf(t.mem, key) }

// Bump increments the store revision and returns the new value.
func (t *Txn) Bump() (uint64, error) {
	var rev uint64
	if v := t.Meta(metaRevisionKey); len(v) == 8 {
		rev = binary.BigEndian.Uint64(v)
	}
	rev++
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], rev)
	return rev, t.SetMeta(metaRevisionKey, b[:])
}

// metaEntry is memdb's row for a metadata value.
type metaEntry struct {
	Key   string
	Value []byte
}

// cacheState is memdb's one row of tableCache: the etcd revision the
// cache reflects and the mod revision of the store's revision key then.
// Read in the same memdb transaction as the records, it is consistent
// with them.
type cacheState struct {
	ID        string
	Rev       int64
	CommitRev int64
}

func cacheStateOf(mtx *memdb.Txn) cacheState {
	raw, err := mtx.First(tableCache, "id", "s")
	if err != nil || raw == nil {
		return cacheState{ID: "s"}
	}
	return *raw.(*cacheState)
}

// loadRecord decodes an encoded record into mtx.
func loadRecord(mtx *memdb.Txn, tbl, key string, v []byte) error {
	t, err := lookupTable(tbl)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	rec, err := t.decode(v)
	if err != nil {
		return fmt.Errorf("%w: %s/%s: %v", ErrCorrupt, tbl, key, err)
	}
	if rec.Key() != key {
		return fmt.Errorf("%w: %s/%s holds the record of key %q", ErrCorrupt, tbl, key, rec.Key())
	}
	return mtx.Insert(tbl, rec)
}

// deleteRecord removes a record from mtx (missing is fine).
func deleteRecord(mtx *memdb.Txn, tbl, key string) error {
	raw, err := mtx.First(tbl, "id", key)
	if err != nil || raw == nil {
		return err
	}
	return mtx.Delete(tbl, raw)
}

// applyWrite applies one write to mtx.
func applyWrite(mtx *memdb.Txn, w write) error {
	switch {
	case w.tbl == "" && w.val == nil:
		return deleteRecord(mtx, tableMeta, w.key)
	case w.tbl == "":
		return mtx.Insert(tableMeta, &metaEntry{Key: w.key, Value: w.val})
	case w.val == nil:
		return deleteRecord(mtx, w.tbl, w.key)
	default:
		return loadRecord(mtx, w.tbl, w.key, w.val)
	}
}

// compareCache compares every table and meta value of mtx with want, the
// backend's contents (tbl → key → encoded value; "" for meta).
func compareCache(mtx *memdb.Txn, want map[string]map[string][]byte, where string) error {
	names := []string{tableMeta}
	for name := range tables {
		names = append(names, name)
	}
	for _, name := range names {
		src := want[name]
		if name == tableMeta {
			src = want[""]
		}
		it, err := mtx.Get(name, "id")
		if err != nil {
			return err
		}
		inMem := 0
		for raw := it.Next(); raw != nil; raw = it.Next() {
			inMem++
			var key string
			var b []byte
			if m, ok := raw.(*metaEntry); ok {
				key, b = m.Key, m.Value
			} else {
				key = raw.(Record).Key()
				if b, err = json.Marshal(raw); err != nil {
					return err
				}
			}
			v, ok := src[key]
			if !ok {
				return fmt.Errorf("store: %s/%s is in memdb but not in %s", name, key, where)
			}
			if string(b) != string(v) {
				return fmt.Errorf("store: %s/%s differs between %s and memdb", name, key, where)
			}
		}
		if inMem != len(src) {
			return fmt.Errorf("store: table %s has %d records in memdb and %d in %s", name, inMem, len(src), where)
		}
	}
	return nil
}

// Backup writes the store in the backend-neutral backup format (see
// backup.go) to w, from one consistent snapshot of the cache. Call Sync
// first for a linearizable one.
func (s *Store) Backup(w io.Writer) (int64, error) {
	mtx := s.mem.Txn(false)
	defer mtx.Abort()
	n, err := writeBackup(w, mtx)
	if err != nil {
		return n, fmt.Errorf("store: backup: %w", err)
	}
	return n, nil
}
