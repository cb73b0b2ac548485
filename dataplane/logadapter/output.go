package logadapter

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/dataplane/logrecord"
)

// Output is a logrecord.Sink that writes records, one line each, to a
// Writer (stdout, or the access-log file) from its own goroutine. Offer
// never waits: a record that does not fit in the queue (MaxQueueBytes)
// is dropped and counted, so a blocked output never stalls the readers or
// the data path.
type Output struct {
	w        io.Writer
	maxBytes int64
	ch       chan []byte
	queued   atomic.Int64
	dropped  prometheus.Counter
	written  atomic.Uint64
	accepted atomic.Uint64
	pool     sync.Pool
	shutdown time.Duration
}

// OutputConfig configures an Output.
type OutputConfig struct {
	Writer io.Writer
	// MaxQueueBytes bounds the records waiting (default 8 MiB);
	// MaxQueue their number (default 8192).
	MaxQueueBytes int64
	MaxQueue      int
	// Drain is how long Run keeps writing what is queued after its
	// context ends (default 2s): a blocked Writer is given up on.
	Drain      time.Duration
	Registerer prometheus.Registerer
}

var _ logrecord.Sink = (*Output)(nil)

// NewOutput builds an Output; Run writes.
func NewOutput(cfg OutputConfig) (*Output, error) {
	if cfg.MaxQueueBytes <= 0 {
		cfg.MaxQueueBytes = 8 << 20
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 8192
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 2 * time.Second
	}
	o := &Output{w: cfg.Writer, maxBytes: cfg.MaxQueueBytes, ch: make(chan []byte, cfg.MaxQueue), shutdown: cfg.Drain,
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_proxy_log_output_dropped_total",
			Help: "Log records (the app's, adapted) dropped because the output (stdout or the access-log file) did not keep up."})}
	if cfg.Registerer != nil {
		var err error
		if o.dropped, err = register(cfg.Registerer, o.dropped); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// Offer implements logrecord.Sink: it copies rec (plus '\n') into the
// queue, or drops it.
func (o *Output) Offer(rec []byte) bool {
	n := int64(len(rec) + 1)
	if o.queued.Add(n) > o.maxBytes {
		o.queued.Add(-n)
		o.dropped.Inc()
		return false
	}
	var b []byte
	if p, ok := o.pool.Get().(*[]byte); ok && cap(*p) >= int(n) {
		b = (*p)[:0]
	}
	b = append(b, rec...)
	b = append(b, '\n')
	select {
	case o.ch <- b:
		o.accepted.Add(1)
		return true
	default:
		o.queued.Add(-n)
		o.dropped.Inc()
		return false
	}
}

// Progress is how many records Offer took and how many were written
// (logadapter.Config.Progress).
func (o *Output) Progress() (accepted, written uint64) {
	// written first: it never passes accepted read after it.
	w := o.written.Load()
	return o.accepted.Load(), w
}

// Run writes records until ctx ends, then what is queued, for at most
// Drain.
func (o *Output) Run(ctx context.Context) error {
	for {
		select {
		case b := <-o.ch:
			o.write(b)
		case <-ctx.Done():
			return o.drain()
		}
	}
}

func (o *Output) write(b []byte) {
	_, _ = o.w.Write(b)
	o.written.Add(1)
	o.queued.Add(-int64(len(b)))
	if cap(b) <= 64<<10 {
		o.pool.Put(&b)
	}
}

// drain writes what is queued, for at most the Drain time.
func (o *Output) drain() error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case b := <-o.ch:
				o.write(b)
			default:
				return
			}
		}
	}()
	t := time.NewTimer(o.shutdown)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		// A Writer blocked for good: the goroutine ends when it returns.
	}
	return nil
}
