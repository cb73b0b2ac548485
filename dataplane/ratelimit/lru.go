package ratelimit

import (
	"hash/maphash"
	"sync"
)

// buckets maps source identities to their buckets, holding at most a fixed
// number: the least recently used is dropped first. It is split in shards,
// each with its own lock, so that requests from different identities
// rarely contend. A hit does not allocate.
type buckets struct {
	create func(key string) *bucket // makes a missing entry's bucket
	seed   maphash.Seed
	mask   uint64
	shards []shard
}

type shard struct {
	mu         sync.Mutex
	m          map[string]*entry
	head, tail *entry // head: most recently used
	cap        int
}

type entry struct {
	key        string
	b          *bucket
	prev, next *entry
}

// newBuckets holds at most capacity entries (at least 1), made by create.
func newBuckets(capacity int, create func(key string) *bucket) *buckets {
	capacity = max(capacity, 1)
	n := 1
	for n < 16 && capacity/(n*2) >= 64 {
		n *= 2
	}
	c := &buckets{create: create, seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]shard, n)}
	for i := range c.shards {
		c.shards[i].cap = capacity / n
		c.shards[i].m = make(map[string]*entry)
	}
	return c
}

// get returns key's bucket, creating it when absent (which may evict the
// least recently used entry of its shard).
func (c *buckets) get(key string) *bucket {
	s := &c.shards[maphash.String(c.seed, key)&c.mask]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		s.moveToFront(e)
		return e.b
	}
	var e *entry
	if len(s.m) >= s.cap {
		e = s.tail // reuse the evicted entry
		s.unlink(e)
		delete(s.m, e.key)
	} else {
		e = &entry{}
	}
	e.key, e.b = key, c.create(key)
	s.m[key] = e
	s.pushFront(e)
	return e.b
}

// len returns the number of entries held.
func (c *buckets) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// capacity returns the most entries held at once.
func (c *buckets) capacity() int { return len(c.shards) * c.shards[0].cap }

func (s *shard) moveToFront(e *entry) {
	if s.head == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}

func (s *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (s *shard) pushFront(e *entry) {
	e.next = s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}
