package store

import "errors"

var (
	// ErrNotFound is returned when a record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrLocked is returned when another process holds the data file.
	ErrLocked = errors.New("store: data file is locked by another process (is another meshd running on this data dir?)")
	// ErrSchema is returned when the data file has a schema version this build does not know.
	ErrSchema = errors.New("store: unsupported schema version")
	// ErrCorrupt is returned when the data file cannot be read.
	ErrCorrupt = errors.New("store: data file is corrupt")
)

var (
	// ErrTxnTooLarge is returned by a write transaction over MaxTxnWrites
	// records or MaxTxnBytes (etcd's limits, kept on every backend).
	ErrTxnTooLarge = errors.New("store: transaction too large")
	// ErrNotLeader is returned by UpdateAsLeader on a replica that is not
	// (or no longer) the leader.
	ErrNotLeader = errors.New("store: this meshd replica is not the leader")
	// ErrStale is returned by Sync when the cache did not catch up with
	// etcd in time (the caller answers Unavailable).
	ErrStale = errors.New("store: this replica's cache is behind etcd")
	// ErrNoSpace is returned when etcd raised its NOSPACE alarm.
	ErrNoSpace = errors.New("store: etcd is out of space (NOSPACE alarm): compact and defragment it (etcdctl compact REV; etcdctl defrag; etcdctl alarm disarm) or raise its --quota-backend-bytes")
	// ErrUnavailable is returned when etcd cannot be reached (a request
	// timed out, no leader, the connection refused): meshd answers
	// Unavailable. A write that timed out may still have committed.
	ErrUnavailable = errors.New("etcd unreachable")
	// ErrNotEmpty is returned by Import into a store that holds records.
	ErrNotEmpty = errors.New("store: not empty")
)
