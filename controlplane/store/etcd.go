package store

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EtcdConfig configures the etcd backend.
type EtcdConfig struct {
	// Endpoints are etcd's client URLs (https://host:port). Required.
	Endpoints []string
	// TLS, when set, is the client TLS config (client certificate and CA).
	TLS *tls.Config
	// Prefix is prepended to every key (default "/minimesh/"), so one etcd
	// can hold two meshes.
	Prefix string
	// Replica names this meshd replica in presence keys (default
	// hostname-pid).
	Replica string
	// SessionTTL is the lease of this replica's session (leadership and
	// presence), in seconds (default 10).
	SessionTTL int
	// RequestTimeout bounds every etcd request (default 10s).
	RequestTimeout time.Duration
	// DialTimeout bounds connecting to etcd at open (default 5s).
	DialTimeout time.Duration
	// Registerer, when set, gets minimesh_meshd_cache_lag_seconds.
	Registerer prometheus.Registerer
}

const (
	defaultEtcdPrefix = "/minimesh/"
	// syncWait is how long a linearizable read waits for the cache.
	syncWait = 5 * time.Second
	// maxConflicts bounds an Update's retries on concurrent writes.
	maxConflicts = 64
	probeEvery   = 5 * time.Second
)

// etcdBackend keeps the state in etcd under a prefix:
//
//	P schema        the schema version, written once
//	P commit        the store's revision key: every Update writes it, and
//	                compares its mod revision to the one the cache was at
//	P t/TABLE/KEY   a record (its JSON)
//	P m/KEY         a metadata value
//	P presence/INST the replica a proxy instance is connected to (leased)
//	P replicas/NAME a live replica's version and schemas (leased)
//	P leader/...    the election (concurrency.Election)
//
// memdb is this replica's cache: loaded from one read of the prefix at a
// revision, then fed by a watch from the next revision.
type etcdBackend struct {
	cli *clientv3.Client
	cfg EtcdConfig
	p   string
	log interface {
		Warn(string, ...any)
		Info(string, ...any)
		Error(string, ...any)
	}
	s      *Store
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	updSem chan struct{} // one local Update at a time (they would conflict anyway); a channel so the wait can be bounded

	mu       sync.Mutex
	applied  int64         // the revision key's mod revision the cache reflects
	notify   chan struct{} // closed and replaced at every apply
	heardRev int64         // newest revision-key mod revision heard of
	heardAt  time.Time     // when the cache first fell behind heardRev
	sess     *concurrency.Session
	leader   *leadership
	presence map[string]bool // instances this replica holds presence for
	// presenceRetry: presence puts that failed (etcd unreachable for a
	// moment), put again every second by sessionLoop: without the key the
	// leader would take the live stream for one that ended.
	presenceRetry map[string]bool
	// presMu orders a retried presence put against the clear of the same
	// instance's key, so a retry never puts back a key just cleared.
	presMu  sync.Mutex
	info    *string // this replica's replicas/NAME value, once set
	reloads int64   // reloads after the first load (compactions)
}

type leadership struct {
	key string
	rev int64
}

func openEtcd(cfg Config) (*Store, error) {
	ec := *cfg.Etcd
	if len(ec.Endpoints) == 0 {
		return nil, errors.New("store: etcd: no endpoints (--store etcd://HOST:PORT[,HOST:PORT...])")
	}
	if ec.Prefix == "" {
		ec.Prefix = defaultEtcdPrefix
	}
	if !strings.HasPrefix(ec.Prefix, "/") || !strings.HasSuffix(ec.Prefix, "/") {
		return nil, fmt.Errorf("store: etcd prefix %q must start and end with /", ec.Prefix)
	}
	if ec.Replica == "" {
		h, _ := os.Hostname()
		// A random suffix: replicas started in one process (tests) differ.
		var r [3]byte
		_, _ = rand.Read(r[:])
		ec.Replica = h + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(r[:])
	}
	if ec.SessionTTL <= 0 {
		ec.SessionTTL = 10
	}
	if ec.RequestTimeout <= 0 {
		ec.RequestTimeout = 10 * time.Second
	}
	if ec.DialTimeout <= 0 {
		ec.DialTimeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            ec.Endpoints,
		TLS:                  ec.TLS,
		DialTimeout:          ec.DialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
		// gRPC's reconnect backoff grows to 120 s: after an outage of
		// tens of seconds a replica would stay cut off (no session, no
		// presence, no writes) for as long again. Retry at least every
		// second: one connection attempt per second per replica.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: ec.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("store: etcd %v: %w", ec.Endpoints, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &etcdBackend{cli: cli, cfg: ec, p: ec.Prefix, log: cfg.Logger, ctx: ctx, cancel: cancel,
		notify: make(chan struct{}), presence: map[string]bool{}, presenceRetry: map[string]bool{}, updSem: make(chan struct{}, 1)}
	s := &Store{be: b, log: cfg.Logger}
	b.s = s
	fail := func(err error) (*Store, error) {
		cancel()
		_ = cli.Close()
		return nil, err
	}
	if err := b.checkSchema(); err != nil {
		return fail(err)
	}
	mem, err := newMem()
	if err != nil {
		return fail(err)
	}
	s.mem = mem
	rev, err := b.reload()
	if err != nil {
		return fail(err)
	}
	if err := b.newSession(); err != nil {
		return fail(err)
	}
	if ec.Registerer != nil {
		lag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "minimesh_meshd_cache_lag_seconds",
			Help: "How long this replica's cache has been behind the newest store write it knows of (0 when caught up; etcd is probed every 5s)."},
			b.lagSeconds)
		if err := ec.Registerer.Register(lag); err != nil {
			return fail(fmt.Errorf("store: %w", err))
		}
	}
	b.wg.Add(3)
	go func() { defer b.wg.Done(); b.watchLoop(rev) }()
	go func() { defer b.wg.Done(); b.sessionLoop() }()
	go func() { defer b.wg.Done(); b.probeLoop() }()
	return s, nil
}

func (b *etcdBackend) key(parts ...string) string { return b.p + strings.Join(parts, "/") }
func (b *etcdBackend) commitKey() string          { return b.p + "commit" }

func (b *etcdBackend) reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, b.cfg.RequestTimeout)
}

// etcdErr names etcd in an error, and turns the NOSPACE alarm into one
// that says what to do.
func etcdErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if rpctypes.ErrorDesc(err) == rpctypes.ErrNoSpace.Error() || strings.Contains(err.Error(), "NOSPACE") {
		return fmt.Errorf("%w (%s: %v)", ErrNoSpace, op, err)
	}
	if unreachable(err) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	}
	return fmt.Errorf("store: etcd: %s: %w", op, err)
}

// unreachable tells etcd being out of reach (a request that timed out, a
// member without a leader, a connection refused or lost) from a refusal.
func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch rpctypes.ErrorDesc(err) {
	case rpctypes.ErrNoLeader.Error(), rpctypes.ErrTimeout.Error(), rpctypes.ErrTimeoutDueToLeaderFail.Error(),
		rpctypes.ErrTimeoutDueToConnectionLost.Error(), rpctypes.ErrLeaderChanged.Error(), rpctypes.ErrNotCapable.Error():
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return strings.Contains(err.Error(), "connection refused")
}

func (b *etcdBackend) checkSchema() error {
	ctx, cancel := b.reqCtx()
	defer cancel()
	k := b.p + "schema"
	resp, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, strconv.Itoa(SchemaVersion))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return etcdErr("open "+strings.Join(b.cfg.Endpoints, ","), err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 || string(kvs[0].Value) != strconv.Itoa(SchemaVersion) {
		v := ""
		if len(kvs) == 1 {
			v = string(kvs[0].Value)
		}
		if n, err := strconv.Atoi(v); err == nil && n > SchemaVersion {
			return fmt.Errorf("%w: etcd prefix %s has schema %d, written once every live replica read it; this meshd reads up to %d: run the newer meshd (a rolling upgrade never goes back)", ErrSchema, b.p, n, SchemaVersion)
		}
		return fmt.Errorf("%w: etcd prefix %s has %q, this meshd reads %d", ErrSchema, b.p, v, SchemaVersion)
	}
	return nil
}

// classify maps an etcd key to a write: ok false for keys that are not
// records or metadata (schema, presence, election), commit for the
// revision key.
func (b *etcdBackend) classify(key []byte) (w write, commit, ok bool) {
	k := strings.TrimPrefix(string(key), b.p)
	switch {
	case k == "commit":
		return write{}, true, false
	case strings.HasPrefix(k, "t/"):
		tbl, rk, found := strings.Cut(k[2:], "/")
		if !found {
			return write{}, false, false
		}
		return write{tbl: tbl, key: rk}, false, true
	case strings.HasPrefix(k, "m/"):
		return write{key: k[2:]}, false, true
	}
	return write{}, false, false
}

func (b *etcdBackend) keyOf(w write) string {
	if w.tbl == "" {
		return b.key("m", w.key)
	}
	return b.key("t", w.tbl, w.key)
}

// reload loads the cache from one read of the prefix, replacing what it
// held in one memdb transaction, and returns the revision read.
func (b *etcdBackend) reload() (int64, error) {
	ctx, cancel := b.reqCtx()
	defer cancel()
	resp, err := b.cli.Get(ctx, b.p, clientv3.WithPrefix())
	if err != nil {
		return 0, etcdErr("load", err)
	}
	mtx := b.s.mem.Txn(true)
	defer mtx.Abort()
	for name := range memSchema().Tables {
		if _, err := mtx.DeleteAll(name, "id"); err != nil {
			return 0, err
		}
	}
	cs := cacheState{ID: "s", Rev: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		w, commit, ok := b.classify(kv.Key)
		if commit {
			cs.CommitRev = kv.ModRevision
		}
		if !ok {
			continue
		}
		w.val = kv.Value
		if err := applyWrite(mtx, w); err != nil {
			return 0, fmt.Errorf("store: etcd: load %s: %w", kv.Key, err)
		}
	}
	if err := mtx.Insert(tableCache, &cs); err != nil {
		return 0, err
	}
	mtx.Commit()
	b.setApplied(cs.CommitRev)
	return cs.Rev, nil
}

func (b *etcdBackend) setApplied(rev int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if rev > b.applied {
		b.applied = rev
	}
	if b.applied >= b.heardRev {
		b.heardAt = time.Time{}
	}
	close(b.notify)
	b.notify = make(chan struct{})
}

// heard notes a revision-key mod revision learned from etcd.
func (b *etcdBackend) heard(rev int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if rev > b.heardRev {
		b.heardRev = rev
	}
	if b.applied < b.heardRev && b.heardAt.IsZero() {
		b.heardAt = time.Now()
	}
}

func (b *etcdBackend) lagSeconds() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.applied >= b.heardRev || b.heardAt.IsZero() {
		return 0
	}
	return time.Since(b.heardAt).Seconds()
}

// waitApplied waits until the cache reflects rev of the revision key.
func (b *etcdBackend) waitApplied(ctx context.Context, rev int64) error {
	b.heard(rev)
	for {
		b.mu.Lock()
		done, ch := b.applied >= rev, b.notify
		b.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: it reflects revision %d, etcd is at %d", ErrStale, b.appliedRev(), rev)
		}
	}
}

func (b *etcdBackend) appliedRev() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.applied
}

// watchLoop feeds the cache from the watch; a watch that fell behind a
// compaction reloads; one cut (no leader, connection lost) resumes from
// the cache's revision.
func (b *etcdBackend) watchLoop(rev int64) {
	backoff := 100 * time.Millisecond
	for b.ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(b.ctx))
		wch := b.cli.Watch(wctx, b.p, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
		for resp := range wch {
			if resp.CompactRevision != 0 || errors.Is(resp.Err(), rpctypes.ErrCompacted) {
				b.log.Warn("the store's watch fell behind an etcd compaction; reloading the cache", "revision", rev, "compact_revision", resp.CompactRevision)
				// Counted before the reload lands: whoever sees the
				// reloaded cache (Sync returns once it is applied) sees
				// the count too.
				b.mu.Lock()
				b.reloads++
				b.mu.Unlock()
				r, err := b.reload()
				if err != nil {
					b.log.Error("could not reload the cache from etcd", "error", err)
				} else {
					rev = r
				}
				break
			}
			if err := resp.Err(); err != nil {
				b.log.Warn("the store's etcd watch ended; resuming", "revision", rev, "error", err)
				break
			}
			if len(resp.Events) > 0 {
				rev = b.apply(resp.Events)
				backoff = 100 * time.Millisecond
			}
		}
		cancel()
		select {
		case <-b.ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// apply applies a watch response's events (whole revisions) in one memdb
// transaction and returns the last revision.
func (b *etcdBackend) apply(evs []*clientv3.Event) int64 {
	mtx := b.s.mem.Txn(true)
	defer mtx.Abort()
	cs := cacheStateOf(mtx)
	for _, ev := range evs {
		cs.Rev = max(cs.Rev, ev.Kv.ModRevision)
		w, commit, ok := b.classify(ev.Kv.Key)
		if commit && ev.Type == mvccpb.PUT {
			cs.CommitRev = ev.Kv.ModRevision
		}
		if !ok {
			continue
		}
		if ev.Type == mvccpb.PUT {
			w.val = ev.Kv.Value
		}
		if err := applyWrite(mtx, w); err != nil {
			// A record another writer put that does not decode: the
			// cache keeps the old value; CheckConsistency reports it.
			b.log.Error("store: a record from etcd does not decode; ignored", "key", string(ev.Kv.Key), "error", err)
		}
	}
	if err := mtx.Insert(tableCache, &cs); err != nil {
		b.log.Error("store: cache state", "error", err)
		return cs.Rev
	}
	mtx.Commit()
	b.setApplied(cs.CommitRev)
	return cs.Rev
}

func (b *etcdBackend) probeLoop() {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := b.reqCtx()
		resp, err := b.cli.Get(ctx, b.commitKey())
		cancel()
		if err == nil && len(resp.Kvs) == 1 {
			b.heard(resp.Kvs[0].ModRevision)
		}
	}
}

// update: see Store.Update. fn runs against a memdb write transaction on
// the cache at revision R (read in that transaction); its writes go to
// etcd in one Txn that compares the revision key's mod revision to R (and
// the leader's election key for UpdateAsLeader). On success it waits for
// the watch to bring the commit into the cache; on a conflict it waits for
// the cache to reach the newer revision and runs fn again.
func (b *etcdBackend) update(s *Store, fn func(tx *Txn) error, leader bool, within time.Duration) error {
	// One deadline for the whole Update: waiting behind this replica's
	// other writes (each bounded so too) and every etcd request, so a
	// caller hears ErrUnavailable within RequestTimeout (or within),
	// however many writes queue while etcd is unreachable.
	reqTimeout := b.cfg.RequestTimeout
	if within > 0 {
		reqTimeout = min(within, reqTimeout)
	}
	uctx, ucancel := context.WithTimeout(b.ctx, reqTimeout)
	defer ucancel()
	select {
	case b.updSem <- struct{}{}:
	case <-uctx.Done():
		return fmt.Errorf("%w: this replica's other writes to etcd did not end within %s", ErrUnavailable, reqTimeout)
	}
	defer func() { <-b.updSem }()
	reqCtx := func() (context.Context, context.CancelFunc) { return context.WithCancel(uctx) }
	for attempt := 0; ; attempt++ {
		if attempt >= maxConflicts {
			return fmt.Errorf("store: etcd: gave up after %d conflicting writes", attempt)
		}
		// Leadership is taken before fn runs: fn decides as the leader, so
		// the commit must fail if the leadership it saw is gone by then.
		var lead *leadership
		if leader {
			if lead = b.leadership(); lead == nil {
				return ErrNotLeader
			}
		}
		mtx := s.mem.Txn(true)
		cs := cacheStateOf(mtx)
		tx := newTxn(mtx, MaxTxnWrites)
		err := fn(tx)
		mtx.Abort() // the watch brings the commit in
		if err != nil {
			// A refusal decided on a stale cache (a token another replica
			// just made, a record just written) is decided again on a
			// fresh one: one linearizable read of the revision key.
			if b.behind(uctx, cs.CommitRev) {
				continue
			}
			return err
		}
		if len(tx.list) == 0 {
			return nil
		}
		if tx.bytes > MaxTxnBytes {
			return fmt.Errorf("%w: %d bytes, over etcd's request limit (%d bytes allowed)", ErrTxnTooLarge, tx.bytes, MaxTxnBytes)
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(b.commitKey()), "=", cs.CommitRev)}
		orElse := []clientv3.Op{clientv3.OpGet(b.commitKey())}
		if leader {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(lead.key), "=", lead.rev))
			orElse = append(orElse, clientv3.OpGet(lead.key))
		}
		ops := make([]clientv3.Op, 0, len(tx.list)+1)
		for _, w := range tx.list {
			if w.val == nil {
				ops = append(ops, clientv3.OpDelete(b.keyOf(w)))
			} else {
				ops = append(ops, clientv3.OpPut(b.keyOf(w), string(w.val)))
			}
		}
		ops = append(ops, clientv3.OpPut(b.commitKey(), b.cfg.Replica))
		ctx, cancel := reqCtx()
		resp, err := b.cli.Txn(ctx).If(cmps...).Then(ops...).Else(orElse...).Commit()
		cancel()
		if err != nil {
			return etcdErr("commit", err)
		}
		if resp.Succeeded {
			wctx, cancel := reqCtx()
			err := b.waitApplied(wctx, resp.Header.Revision)
			cancel()
			if err != nil {
				// Committed: the write stands; reads here may lag until
				// the watch delivers it (linearizable reads Sync first).
				b.log.Warn("store: committed, but the cache has not caught up yet", "revision", resp.Header.Revision, "error", err)
			}
			return nil
		}
		if leader {
			kvs := resp.Responses[1].GetResponseRange().Kvs
			if len(kvs) == 0 || kvs[0].CreateRevision != lead.rev {
				b.dropLeadership(lead)
				return fmt.Errorf("%w: its election key %s is gone", ErrNotLeader, lead.key)
			}
		}
		var cur int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			cur = kvs[0].ModRevision
		}
		wctx, cancel := reqCtx()
		err = b.waitApplied(wctx, cur)
		cancel()
		if err != nil {
			return err
		}
	}
}

// behind reports whether etcd has store writes past rev, and then waits
// (bounded) for the cache to take them in.
func (b *etcdBackend) behind(ctx context.Context, rev int64) bool {
	ctx, cancel := context.WithTimeout(ctx, min(syncWait, b.cfg.RequestTimeout))
	defer cancel()
	resp, err := b.cli.Get(ctx, b.commitKey())
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision <= rev {
		return false
	}
	return b.waitApplied(ctx, resp.Kvs[0].ModRevision) == nil
}

func (b *etcdBackend) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, syncWait)
	defer cancel()
	resp, err := b.cli.Get(ctx, b.commitKey()) // linearizable
	if err != nil {
		return fmt.Errorf("%w: reading etcd's revision: %w", ErrStale, etcdErr("sync", err))
	}
	var rev int64
	if len(resp.Kvs) == 1 {
		rev = resp.Kvs[0].ModRevision
	}
	return b.waitApplied(ctx, rev)
}

func (b *etcdBackend) maxWrites() int { return MaxTxnWrites }
func (b *etcdBackend) path() string {
	return "etcd " + strings.Join(b.cfg.Endpoints, ",") + " prefix " + b.p
}

func (b *etcdBackend) close() error {
	b.cancel()
	b.mu.Lock()
	sess := b.sess
	b.mu.Unlock()
	if sess != nil {
		_ = sess.Close() // revokes the lease: presence and leadership go at once
	}
	b.wg.Wait()
	return b.cli.Close()
}

// checkConsistency compares the cache with etcd at the revision the cache
// reflects.
func (b *etcdBackend) checkConsistency(s *Store) error {
	mtx := s.mem.Txn(false)
	defer mtx.Abort()
	cs := cacheStateOf(mtx)
	ctx, cancel := b.reqCtx()
	defer cancel()
	resp, err := b.cli.Get(ctx, b.p, clientv3.WithPrefix(), clientv3.WithRev(cs.Rev))
	if err != nil {
		return etcdErr("consistency check", err)
	}
	want := map[string]map[string][]byte{"": {}}
	for name := range tables {
		want[name] = map[string][]byte{}
	}
	for _, kv := range resp.Kvs {
		w, _, ok := b.classify(kv.Key)
		if !ok {
			continue
		}
		if want[w.tbl] == nil {
			return fmt.Errorf("store: etcd holds %s of an unknown table", kv.Key)
		}
		want[w.tbl][w.key] = kv.Value
	}
	return compareCache(mtx, want, fmt.Sprintf("etcd at revision %d", cs.Rev))
}

// --- session, leadership, presence ---

func (b *etcdBackend) newSession() error {
	sess, err := concurrency.NewSession(b.cli, concurrency.WithTTL(b.cfg.SessionTTL),
		concurrency.WithContext(clientv3.WithRequireLeader(b.ctx)))
	if err != nil {
		return etcdErr("session", err)
	}
	b.mu.Lock()
	b.sess = sess
	insts := make([]string, 0, len(b.presence))
	for i := range b.presence {
		insts = append(insts, i)
	}
	info := b.info
	b.mu.Unlock()
	if info != nil {
		if err := b.putReplica(sess, *info); err != nil {
			b.log.Warn("could not announce this replica again", "replica", b.cfg.Replica, "error", err)
		}
	}
	for _, i := range insts { // a new lease: presence comes back with it
		if err := b.putPresence(sess, i); err != nil {
			b.log.Warn("could not restore a proxy's presence", "instance_id", i, "error", err)
		}
	}
	return nil
}

func (b *etcdBackend) session() *concurrency.Session {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sess
}

// sessionLoop makes a new session when the lease is lost (expired, or the
// member lost its leader): leadership ends with it.
func (b *etcdBackend) sessionLoop() {
	backoff := 100 * time.Millisecond
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	for {
		sess := b.session()
		select {
		case <-b.ctx.Done():
			return
		case <-retry.C:
			b.retryPresence(sess)
			continue
		case <-sess.Done():
		}
		b.mu.Lock()
		b.leader = nil
		b.mu.Unlock()
		b.log.Warn("lost the etcd session lease (leadership and presence went with it); opening a new one")
		for b.ctx.Err() == nil {
			if err := b.newSession(); err == nil {
				backoff = 100 * time.Millisecond
				break
			}
			select {
			case <-b.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
		}
	}
}

func (b *etcdBackend) leadership() *leadership {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.leader
}

func (b *etcdBackend) dropLeadership(l *leadership) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.leader == l {
		b.leader = nil
	}
}

func (b *etcdBackend) isLeader() bool { return b.leadership() != nil }

// campaign runs for leader until ctx ends, again after every lost session.
func (b *etcdBackend) campaign(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil && b.ctx.Err() == nil {
		sess := b.session()
		el := concurrency.NewElection(sess, b.p+"leader")
		if err := el.Campaign(ctx, b.cfg.Replica); err != nil {
			select {
			case <-ctx.Done():
			case <-b.ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		l := &leadership{key: el.Key(), rev: el.Rev()}
		b.mu.Lock()
		b.leader = l
		b.mu.Unlock()
		b.log.Info("this meshd replica is the leader", "replica", b.cfg.Replica, "key", l.key)
		select {
		case <-sess.Done():
		case <-ctx.Done():
		case <-b.ctx.Done():
		}
		b.dropLeadership(l)
		if ctx.Err() != nil || b.ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = el.Resign(rctx)
			cancel()
		}
	}
	return nil
}

func (b *etcdBackend) putPresence(sess *concurrency.Session, inst string) error {
	ctx, cancel := b.reqCtx()
	defer cancel()
	_, err := b.cli.Put(ctx, b.key("presence", inst), b.cfg.Replica, clientv3.WithLease(sess.Lease()))
	return etcdErr("presence", err)
}

func (b *etcdBackend) setPresence(inst string) error {
	b.mu.Lock()
	b.presence[inst] = true
	sess := b.sess
	b.mu.Unlock()
	err := b.putPresence(sess, inst)
	b.mu.Lock()
	if err != nil && b.presence[inst] {
		b.presenceRetry[inst] = true
	} else {
		delete(b.presenceRetry, inst)
	}
	b.mu.Unlock()
	return err
}

// retryPresence puts again the presence keys whose put failed, for
// instances still connected here.
func (b *etcdBackend) retryPresence(sess *concurrency.Session) {
	b.mu.Lock()
	var insts []string
	for i := range b.presenceRetry {
		if b.presence[i] {
			insts = append(insts, i)
		} else {
			delete(b.presenceRetry, i)
		}
	}
	b.mu.Unlock()
	for _, i := range insts {
		b.presMu.Lock()
		b.mu.Lock()
		still := b.presence[i]
		b.mu.Unlock()
		var err error
		if still {
			err = b.putPresence(sess, i)
		}
		b.mu.Lock()
		if err == nil || !b.presence[i] {
			delete(b.presenceRetry, i)
		}
		b.mu.Unlock()
		b.presMu.Unlock()
		if err != nil {
			b.log.Warn("could not record a proxy's presence; retrying", "instance_id", i, "error", err)
			return // etcd still unreachable: the next tick tries again
		}
	}
}

func (b *etcdBackend) clearPresence(inst string) error {
	b.presMu.Lock()
	defer b.presMu.Unlock()
	b.mu.Lock()
	delete(b.presence, inst)
	delete(b.presenceRetry, inst)
	b.mu.Unlock()
	ctx, cancel := b.reqCtx()
	defer cancel()
	k := b.key("presence", inst)
	// Only our own claim: the proxy may have reconnected to another replica.
	_, err := b.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(k), "=", b.cfg.Replica)).Then(clientv3.OpDelete(k)).Commit()
	return etcdErr("presence", err)
}

func (b *etcdBackend) presenceAll(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.RequestTimeout)
	defer cancel()
	pre := b.key("presence") + "/"
	resp, err := b.cli.Get(ctx, pre, clientv3.WithPrefix())
	if err != nil {
		return nil, etcdErr("presence", err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), pre)] = string(kv.Value)
	}
	return out, nil
}

func (b *etcdBackend) replica() string { return b.cfg.Replica }

func (b *etcdBackend) putReplica(sess *concurrency.Session, v string) error {
	ctx, cancel := b.reqCtx()
	defer cancel()
	_, err := b.cli.Put(ctx, b.key("replicas", b.cfg.Replica), v, clientv3.WithLease(sess.Lease()))
	return etcdErr("replica presence", err)
}

func (b *etcdBackend) setReplicaInfo(v string) error {
	b.mu.Lock()
	b.info = &v
	sess := b.sess
	b.mu.Unlock()
	return b.putReplica(sess, v)
}

func (b *etcdBackend) replicas(ctx context.Context) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.RequestTimeout)
	defer cancel()
	pre := b.key("replicas") + "/"
	resp, err := b.cli.Get(ctx, pre, clientv3.WithPrefix())
	if err != nil {
		return nil, etcdErr("replica presence", err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), pre)] = string(kv.Value)
	}
	return out, nil
}

func (b *etcdBackend) cacheReloads() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.reloads
}

func (b *etcdBackend) sessionLease() int64 {
	if s := b.session(); s != nil {
		return int64(s.Lease())
	}
	return 0
}
