package identity

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/controlplane/store"
)

const (
	// DefaultRenewQueue bounds the renewal records held while etcd is
	// unreachable.
	DefaultRenewQueue = 10000
	// DefaultFlushEvery is how often the queue is written when etcd is
	// back (it is drained without pause once a write succeeds).
	DefaultFlushEvery = time.Second
	// RecordWait bounds how long a Renew waits to record its certificate
	// (this replica's other writes, then etcd) before it queues the record
	// instead: well inside a proxy's call timeout (10 s) and half of a
	// short SVID's life, where etcd's RequestTimeout (10 s) is neither.
	RecordWait = 2 * time.Second
)

// renewRecord is what a Renew writes: its certificate record, and the
// proxy's SVIDExpiresAt when the proxy is the caller's.
type renewRecord struct {
	cert *store.Certificate
}

// renewQueue holds the records of renewals signed while etcd was
// unreachable, in order, until the flusher writes them.
type renewQueue struct {
	max     int
	mu      sync.Mutex
	recs    []renewRecord
	wake    chan struct{}
	queued  prometheus.GaugeFunc
	dropped *prometheus.CounterVec
}

func newRenewQueue(max int, reg prometheus.Registerer) (*renewQueue, error) {
	if max <= 0 {
		max = DefaultRenewQueue
	}
	q := &renewQueue{max: max, wake: make(chan struct{}, 1)}
	q.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "minimesh_meshd_renew_records_queued",
		Help: "Certificate records of renewals signed while etcd was unreachable, waiting to be written."},
		func() float64 { return float64(q.len()) })
	q.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minimesh_meshd_renew_records_dropped_total",
		Help: "Renewal records not queued or not written: queue_full (the Renew was refused), write_failed (etcd refused the write)."},
		[]string{"reason"})
	if reg != nil {
		for _, c := range []prometheus.Collector{q.queued, q.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("identity: %w", err)
			}
		}
	}
	return q, nil
}

func (q *renewQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.recs)
}

// push queues rec, or refuses it (an error wrapping store.ErrUnavailable)
// when the queue is full.
func (q *renewQueue) push(rec renewRecord, cause error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.recs) >= q.max {
		q.dropped.WithLabelValues("queue_full").Inc()
		return fmt.Errorf("%w (%d renewals signed meanwhile are waiting to be recorded; no more are issued until etcd is back): %v", store.ErrUnavailable, len(q.recs), cause)
	}
	q.recs = append(q.recs, rec)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// pending reports whether records wait: a Renew then queues its own
// behind them without waiting on etcd.
func (q *renewQueue) pending() bool { return q.len() > 0 }

func (q *renewQueue) head(n int) []renewRecord {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]renewRecord(nil), q.recs[:min(n, len(q.recs))]...)
}

func (q *renewQueue) drop(n int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.recs = append(q.recs[:0:0], q.recs[n:]...)
}

// queueRenewal records the certificate of a renewal whose write failed
// because etcd is unreachable.
func (a *Authority) queueRenewal(c *store.Certificate, cause error) error {
	if err := a.queue.push(renewRecord{cert: c}, cause); err != nil {
		return err
	}
	a.cfg.Logger.Warn("etcd unreachable: renewal issued, its record queued until etcd is back", "serial", c.Serial, "instance_id", c.InstanceID, "queued", a.queue.len(), "error", cause)
	return nil
}

// RenewRecordsQueued is how many renewal records wait for etcd.
func (a *Authority) RenewRecordsQueued() int { return a.queue.len() }

// RunRecorder writes queued renewal records (see Renew) when etcd is back,
// in chunks of the store's write limit, until ctx ends.
func (a *Authority) RunRecorder(ctx context.Context) {
	t := time.NewTicker(a.cfg.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if n := a.queue.len(); n > 0 {
				a.cfg.Logger.Warn("meshd stopping with renewal records not written (etcd unreachable); those certificates stay valid but unlisted", "queued", n)
			}
			return
		case <-t.C:
		case <-a.queue.wake:
		}
		if !a.queue.pending() {
			continue
		}
		// Is etcd back? A read that holds no write lock, so a recorder
		// waiting on etcd does not delay other writes' refusals.
		sctx, cancel := context.WithTimeout(ctx, a.cfg.FlushEvery)
		err := a.cfg.Store.Sync(sctx)
		cancel()
		if err != nil {
			continue
		}
		for ctx.Err() == nil && a.flushOnce() {
		}
	}
}

// flushOnce writes one chunk; it reports whether to go on at once.
func (a *Authority) flushOnce() bool {
	// Each record is up to two writes: the certificate and the proxy.
	recs := a.queue.head(max(1, a.cfg.Store.MaxWrites()/2))
	if len(recs) == 0 {
		return false
	}
	err := a.cfg.Store.Update(func(tx *store.Txn) error {
		for _, r := range recs {
			if err := tx.Put(store.TableCertificates, r.cert); err != nil {
				return err
			}
			rec, err := tx.Get(store.TableProxies, r.cert.InstanceID)
			if err != nil {
				continue
			}
			if p := rec.(*store.Proxy); p.SPIFFEID == r.cert.SPIFFEID && r.cert.NotAfter.After(p.SVIDExpiresAt) {
				cp := *p
				cp.SVIDExpiresAt = r.cert.NotAfter
				if err := tx.Put(store.TableProxies, &cp); err != nil {
					return err
				}
			}
		}
		return nil
	})
	switch {
	case err == nil:
		a.queue.drop(len(recs))
		a.cfg.Logger.Info("etcd reachable: queued renewal records written", "records", len(recs), "left", a.queue.len())
		return true
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrStale):
		return false // etcd still out of reach: the next tick tries again
	default:
		a.queue.drop(len(recs))
		a.queue.dropped.WithLabelValues("write_failed").Add(float64(len(recs)))
		a.cfg.Logger.Error("queued renewal records refused by the store; dropped", "records", len(recs), "error", err)
		return true
	}
}
