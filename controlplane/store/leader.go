package store

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Leader is the replica that holds the leader election now ("" when none
// does): on etcd the value of the oldest key under leader/ (what
// concurrency.Election.Leader reads), on bbolt this process.
func (s *Store) Leader(ctx context.Context) (string, error) {
	b, ok := s.be.(*etcdBackend)
	if !ok {
		return s.Replica(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.RequestTimeout)
	defer cancel()
	resp, err := b.cli.Get(ctx, b.p+"leader/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", etcdErr("leader", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// CacheLag is how long this replica's cache has been behind the newest
// store revision it has heard of (minimesh_meshd_cache_lag_seconds); 0 on
// bbolt.
func (s *Store) CacheLag() time.Duration {
	b, ok := s.be.(*etcdBackend)
	if !ok {
		return 0
	}
	return time.Duration(b.lagSeconds() * float64(time.Second))
}

// Changed returns a channel closed at this replica's next cache apply of
// a write from etcd's watch (any replica's, this one's included): a push
// server takes another replica's Apply at once rather than at its next
// periodic check. Take a new channel after each close. nil on bbolt,
// whose one process triggers on its own writes.
func (s *Store) Changed() <-chan struct{} {
	b, ok := s.be.(*etcdBackend)
	if !ok {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.notify
}

// CacheRevision is the etcd revision of the newest commit this replica's
// cache holds: it moves with every write of any replica (Revision moves
// only with those that bump it). 0 on bbolt, whose one process sees its
// own writes.
func (s *Store) CacheRevision() int64 {
	b, ok := s.be.(*etcdBackend)
	if !ok {
		return 0
	}
	return b.appliedRev()
}
