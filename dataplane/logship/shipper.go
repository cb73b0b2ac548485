package logship

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"minimesh/api"
	"minimesh/dataplane/logrecord"
)

// Defaults of Config.
const (
	DefaultQueueRecords = 8192
	DefaultQueueBytes   = 16 << 20
	DefaultCallTimeout  = time.Minute
	DefaultBackoffMin   = 500 * time.Millisecond
	DefaultBackoffMax   = 30 * time.Second
	DefaultFlushTimeout = 5 * time.Second
	// MaxRecordBytes is the longest record taken: the adapter's longest
	// (api.MaxRecordBytes) and room for its added fields.
	MaxRecordBytes = api.MaxRecordBytes + 16<<10
)

// Config configures a Shipper.
type Config struct {
	// SpoolDir holds the spool (created 0700; it must be ours, reached
	// through no symbolic link). Required.
	SpoolDir string
	// Service and Pod name the object keys: <Service>/<Pod>/<instance>/...
	Service, Pod string
	// Instance returns the proxy's instance ID (the agent's), read when a
	// batch is closed.
	Instance func() string
	// The in-memory queue between Offer and the spool: records and bytes
	// (defaults DefaultQueueRecords, DefaultQueueBytes); past either,
	// records are dropped and counted.
	QueueRecords int
	QueueBytes   int64
	// CallTimeout bounds one upload (default DefaultCallTimeout); the
	// retries back off from BackoffMin to BackoffMax with jitter.
	CallTimeout time.Duration
	// FlushTimeout bounds the uploads after Run's ctx ends (default
	// DefaultFlushTimeout; negative: none).
	FlushTimeout           time.Duration
	BackoffMin, BackoffMax time.Duration
	// DialContext opens the connections to the store; nil: a net.Dialer
	// (5 s timeout). Tests point bucket.localhost at a loopback server.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Logger      *slog.Logger
	Registerer  prometheus.Registerer

	// firstOffset is a new spool's first offset (tests); 0: the time in
	// microseconds.
	firstOffset uint64
}

// target is one applied LogShipping and its client.
type target struct {
	obj        *api.LogShipping
	client     *minio.Client
	transport  *http.Transport
	batchBytes int64
	batchAge   time.Duration
	spoolBytes int64
}

// Shipper sends records to an S3-compatible store through a spool on
// disk. It is a logrecord.Sink: Offer never blocks. It ships only while a
// LogShipping is applied (Prepare); otherwise Offer refuses records
// without counting them, and what the spool holds waits.
type Shipper struct {
	cfg   Config
	log   *slog.Logger
	spool *spool
	m     *metrics

	cur    atomic.Pointer[target]
	queue  chan []byte
	queued atomic.Int64 // bytes in queue
	// taken counts the records Offer queued; spooled those of them the
	// spool has flushed to its file (or dropped), in order (Progress).
	taken, spooled atomic.Uint64
	wake           chan struct{} // a batch was sealed or the target changed
	reconf         chan struct{} // the target changed: the writer re-reads its limits

	runOnce sync.Once
}

var _ logrecord.Sink = (*Shipper)(nil)

// New opens the spool (resuming what it holds) and registers the metrics.
func New(cfg Config) (*Shipper, error) {
	if cfg.SpoolDir == "" {
		return nil, errors.New("logship: no spool directory")
	}
	if cfg.QueueRecords <= 0 {
		cfg.QueueRecords = DefaultQueueRecords
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.FlushTimeout == 0 {
		cfg.FlushTimeout = DefaultFlushTimeout
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffMin)
	}
	if cfg.Instance == nil {
		cfg.Instance = func() string { return "" }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Shipper{
		cfg: cfg, log: cfg.Logger,
		queue:  make(chan []byte, cfg.QueueRecords),
		wake:   make(chan struct{}, 1),
		reconf: make(chan struct{}, 1),
	}
	first := cfg.firstOffset
	if first == 0 {
		first = uint64(time.Now().UnixMicro())
	}
	sp, err := openSpool(cfg.SpoolDir, time.Now(), first, s.key)
	if err != nil {
		return nil, err
	}
	s.spool = sp
	s.m, err = newMetrics(cfg.Registerer, sp.bytes)
	if err != nil {
		return nil, err
	}
	if n := len(sp.sealed); n > 0 || sp.openF != nil {
		s.log.Info("log shipping: resuming the spool", "dir", sp.dir, "closed_batches", n, "open_records", sp.openN, "bytes", sp.bytes())
	}
	return s, nil
}

// key is a batch's object key: <service>/<pod>/<instance>/<first>-<last>.jsonl.gz.
func (s *Shipper) key(first, last uint64) string {
	part := func(v string) string {
		if v == "" || strings.ContainsAny(v, "/\\") || v == "." || v == ".." {
			return "unknown"
		}
		return v
	}
	return part(s.cfg.Service) + "/" + part(s.cfg.Pod) + "/" + part(s.cfg.Instance()) + "/" +
		fmtOffset(first) + "-" + fmtOffset(last) + sealedSuffix
}

// Offer implements logrecord.Sink: rec (one JSON object, no newline) is
// copied into the queue, or dropped and counted when the queue is full,
// rec is too long or holds a newline. Without a LogShipping applied it
// returns false and counts nothing.
func (s *Shipper) Offer(rec []byte) bool {
	if s.cur.Load() == nil {
		return false
	}
	if len(rec) == 0 || len(rec) > MaxRecordBytes || bytes.IndexByte(rec, '\n') >= 0 {
		s.m.dropped.WithLabelValues("invalid").Inc()
		return false
	}
	n := int64(len(rec))
	if s.queued.Add(n) > s.cfg.QueueBytes {
		s.queued.Add(-n)
		s.m.dropped.WithLabelValues("queue_full").Inc()
		return false
	}
	select {
	case s.queue <- bytes.Clone(rec):
		s.taken.Add(1)
		return true
	default:
		s.queued.Add(-n)
		s.m.dropped.WithLabelValues("queue_full").Inc()
		return false
	}
}

// Progress is how many records Offer took and how many of them are in the
// spool's file, in order (a record the spool could not take counts as done:
// it is dropped and counted). A killed proxy loses none of the latter; the
// log adapter persists its read offsets only past them
// (logadapter.Config.Progress).
func (s *Shipper) Progress() (accepted, written uint64) {
	w := s.spooled.Load() // first: it never passes taken read after it
	return s.taken.Load(), w
}

// Prepare implements the sidecar's Part contract for the LogShipping o of
// this proxy's service (nil: none): it builds the client, and commit
// makes it the target. An unchanged spec keeps the current client.
func (s *Shipper) Prepare(o *api.LogShipping) (commit func(), err error) {
	if o == nil {
		return func() { s.setTarget(nil) }, nil
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if cur := s.cur.Load(); cur != nil && proto.Equal(cur.obj.Spec, o.Spec) {
		return func() {}, nil
	}
	c, tr, err := newClient(o, storeTimeouts{dial: 5 * time.Second, tlsHandshake: 10 * time.Second, responseHeader: s.cfg.CallTimeout, dialContext: s.cfg.DialContext})
	if err != nil {
		return nil, fmt.Errorf("LogShipping %s/%s: %w", o.Namespace, o.Name, err)
	}
	t := &target{obj: o, client: c, transport: tr, batchBytes: api.DefaultBatchBytes, batchAge: api.DefaultBatchAge, spoolBytes: api.DefaultSpoolBytes}
	sp := o.Spec
	if b := sp.GetBatchBytes(); b != 0 {
		t.batchBytes = int64(b)
	}
	if sp.GetBatchAge() != nil {
		t.batchAge = sp.GetBatchAge().AsDuration()
	}
	if b := sp.GetSpoolBytes(); b != 0 {
		t.spoolBytes = int64(b)
	}
	return func() { s.setTarget(t) }, nil
}

func (s *Shipper) setTarget(t *target) {
	old := s.cur.Swap(t)
	if old == t {
		return
	}
	if old != nil {
		old.transport.CloseIdleConnections()
	}
	switch {
	case t == nil:
		s.log.Info("log shipping off")
	default:
		s.log.Info("log shipping on", "logshipping", t.obj.Namespace+"/"+t.obj.Name, "endpoint", t.obj.Spec.GetEndpoint(),
			"bucket", t.obj.Spec.GetBucket(), "batch_bytes", t.batchBytes, "batch_age", t.batchAge, "spool_bytes", t.spoolBytes)
	}
	signal(s.wake)
	signal(s.reconf)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Run writes the queue to the spool and uploads the closed batches until
// ctx ends. Then what is queued goes to the spool, the open batch is
// closed, and the uploads go on for at most Config.FlushTimeout (a pod
// being deleted takes its spool with it); whatever is left stays in the
// spool for the next start. Run may be called once.
func (s *Shipper) Run(ctx context.Context) error {
	err := errors.New("logship: Run called twice")
	s.runOnce.Do(func() {
		upCtx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { s.upload(upCtx) })
		err = s.write(ctx)
		if s.cur.Load() != nil {
			s.flushOut()
		}
		cancel()
		wg.Wait()
		if t := s.cur.Load(); t != nil {
			t.transport.CloseIdleConnections()
		}
	})
	return err
}

// flushOut waits, at most FlushTimeout, until the uploader has emptied the
// spool of closed batches.
func (s *Shipper) flushOut() {
	deadline := time.Now().Add(s.cfg.FlushTimeout)
	for time.Now().Before(deadline) {
		if s.Stats().ClosedBatches == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := s.Stats()
	s.log.Warn("log shipping: stopped with batches not uploaded; they are sent at the next start from the spool",
		"closed_batches", st.ClosedBatches, "spool_bytes", st.SpoolBytes, "flush_timeout", s.cfg.FlushTimeout)
}

// write is the writer: records to the open batch; the batch is closed by
// size or age.
func (s *Shipper) write(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var lastWarn time.Time
	var handled uint64 // records taken off the queue (Progress)
	arm := func() {
		timer.Stop()
		t := s.cur.Load()
		_, since := s.spool.openState()
		if t == nil || since.IsZero() {
			return
		}
		timer.Reset(max(0, time.Until(since.Add(t.batchAge))))
	}
	arm()
	for {
		select {
		case <-ctx.Done():
			// Whatever was queued goes to the spool, and the open batch
			// is closed for the last uploads.
		drain:
			for {
				select {
				case rec := <-s.queue:
					s.queued.Add(-int64(len(rec)))
					handled++
					if err := s.spool.append(rec, time.Now()); err != nil {
						s.m.dropped.WithLabelValues("spool_error").Inc()
					}
				default:
					break drain
				}
			}
			if t := s.cur.Load(); t != nil {
				s.seal(t, "stop")
			}
			err := s.spool.close()
			s.spooled.Store(handled)
			return err
		case rec := <-s.queue:
			s.queued.Add(-int64(len(rec)))
			handled++
			_, wasOpen := s.spool.openState()
			if err := s.spool.append(rec, time.Now()); err != nil {
				s.m.dropped.WithLabelValues("spool_error").Inc()
				if now := time.Now(); now.Sub(lastWarn) >= time.Minute {
					lastWarn = now
					s.log.Warn("log shipping: spool write failed; records dropped (logged once a minute)", "err", err)
				}
				if len(s.queue) == 0 && s.spool.flush() == nil {
					s.spooled.Store(handled)
				}
				continue
			}
			t := s.cur.Load()
			if size, _ := s.spool.openState(); t != nil && size >= t.batchBytes || len(s.queue) == 0 {
				// Flush when the queue is empty: a killed proxy loses
				// nothing it had taken in calm times, and the log adapter
				// may persist its offsets past what is flushed.
				if s.spool.flush() == nil {
					s.spooled.Store(handled)
				}
			}
			if size, _ := s.spool.openState(); t != nil && size >= t.batchBytes {
				s.seal(t, "size")
				arm()
			} else if wasOpen.IsZero() {
				arm()
			}
		case <-timer.C:
			if t := s.cur.Load(); t != nil {
				s.seal(t, "age")
			}
			arm()
		case <-s.reconf:
			arm()
		}
	}
}

// seal closes the open batch and trims the spool to its bound.
func (s *Shipper) seal(t *target, why string) {
	b, ok, err := s.spool.seal(s.key)
	switch {
	case err != nil && !ok:
		s.log.Warn("log shipping: closing a batch failed; it stays open", "err", err)
		return
	case err != nil:
		s.log.Warn("log shipping: a batch was closed, but its open file stays", "err", err)
	case !ok:
		return
	}
	s.m.sealed.WithLabelValues(why).Inc()
	if dropped := s.spool.trim(t.spoolBytes); len(dropped) > 0 {
		var recs uint64
		for _, d := range dropped {
			recs += d.records()
		}
		s.m.batchesDropped.Add(float64(len(dropped)))
		s.m.dropped.WithLabelValues("spool_full").Add(float64(recs))
		s.log.Warn("log shipping: spool full, oldest batches dropped", "batches", len(dropped), "records", recs,
			"first_offset", dropped[0].first, "last_offset", dropped[len(dropped)-1].last, "spool_bytes_limit", t.spoolBytes)
	}
	_ = b
	signal(s.wake)
}

// upload is the uploader: the oldest closed batch first, retried with
// capped exponential backoff and jitter until the store has it.
func (s *Shipper) upload(ctx context.Context) {
	failures := 0
	for {
		t := s.cur.Load()
		b, ok := s.spool.oldest()
		if t == nil || !ok {
			if ok {
				_ = s.spool.done(b, false)
			}
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
				continue
			}
		}
		err := s.put(ctx, t, b)
		if ctx.Err() != nil {
			_ = s.spool.done(b, false)
			return
		}
		if errors.Is(err, errCorrupt) {
			_ = s.spool.done(b, true)
			s.m.batchesDropped.Inc()
			s.m.dropped.WithLabelValues("corrupt").Add(float64(b.records()))
			s.log.Error("log shipping: a closed batch in the spool cannot be read; dropped", "err", err, "records", b.records())
			continue
		}
		if err != nil {
			_ = s.spool.done(b, false)
			failures++
			s.m.batchesFailed.Inc()
			d := s.backoff(failures)
			s.log.Warn("log shipping: upload failed; will retry", "batch", b.name(), "err", err, "failures", failures, "retry_in", d.Round(time.Millisecond))
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			continue
		}
		failures = 0
		if err := s.spool.done(b, true); err != nil {
			s.log.Warn("log shipping: removing an uploaded batch failed", "err", err)
		}
		s.m.batchesUploaded.Inc()
		s.m.shipped.Add(float64(b.records()))
	}
}

// backoff is the wait after n failures in a row: BackoffMin doubling to
// BackoffMax, with half of it random (full jitter on the upper half).
func (s *Shipper) backoff(n int) time.Duration {
	d := s.cfg.BackoffMin
	for i := 1; i < n && d < s.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.cfg.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

// errCorrupt is a closed batch that cannot be read back (not gzip): it
// would block every later batch, so it is dropped and counted.
var errCorrupt = errors.New("unreadable batch")

// errChecksum is an upload whose answer does not show that the store has
// the batch's bytes.
var errChecksum = errors.New("the store's answer does not match the batch's checksum")

// put uploads b in one PUT with its Content-MD5 and x-amz-checksum-sha256
// (the store checks the body against them and refuses a mismatch), and
// checks the answer: the store's x-amz-checksum-sha256 must be the
// batch's when it sends one (an ETag is not an MD5 under SSE-KMS), else
// its ETag must be the batch's MD5.
func (s *Shipper) put(ctx context.Context, t *target, b batch) error {
	f, err := s.spool.openBatch(b)
	if err != nil {
		return err
	}
	defer f.Close()
	key, sums, size, err := batchInfo(f)
	if err != nil {
		return fmt.Errorf("%w: batch %s: %w", errCorrupt, b.name(), err)
	}
	if key == "" {
		key = s.key(b.first, b.last)
	}
	sha := base64.StdEncoding.EncodeToString(sums.sha256[:])
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	start := time.Now()
	info, err := t.client.PutObject(cctx, t.obj.Spec.GetBucket(), key, f, size, minio.PutObjectOptions{
		ContentType:      "application/x-ndjson",
		SendContentMd5:   true,
		DisableMultipart: true,
		UserMetadata:     map[string]string{"x-amz-checksum-sha256": sha},
	})
	s.m.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		return err
	}
	etag, md5hex := strings.ToLower(strings.Trim(info.ETag, `"`)), hex.EncodeToString(sums.md5[:])
	switch {
	case info.ChecksumSHA256 != "" && info.ChecksumSHA256 != sha:
		return fmt.Errorf("%w: x-amz-checksum-sha256 %q, the batch's %s (object %s)", errChecksum, truncate(info.ChecksumSHA256, 80), sha, key)
	case info.ChecksumSHA256 == "" && etag != md5hex:
		return fmt.Errorf("%w: ETag %q, MD5 %s (object %s)", errChecksum, truncate(etag, 80), md5hex, key)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Stats are the shipper's counts, for tests and status pages.
type Stats struct {
	SpoolBytes    int64
	ClosedBatches int
	OpenRecords   uint64
	NextOffset    uint64
	QueuedRecords int
}

// Stats returns the spool's state now.
func (s *Shipper) Stats() Stats {
	sp := s.spool
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return Stats{SpoolBytes: sp.bytesLocked(), ClosedBatches: len(sp.sealed), OpenRecords: sp.openN, NextOffset: sp.next, QueuedRecords: len(s.queue)}
}
