package logship

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	shipped         prometheus.Counter
	dropped         *prometheus.CounterVec
	sealed          *prometheus.CounterVec
	batchesUploaded prometheus.Counter
	batchesFailed   prometheus.Counter
	batchesDropped  prometheus.Counter
	latency         prometheus.Histogram
}

// newMetrics registers the shipper's metrics on reg (nil: none); a
// registry that has them already (two shippers in a test) keeps its own.
func newMetrics(reg prometheus.Registerer, spoolBytes func() int64) (*metrics, error) {
	m := &metrics{
		shipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_logship_records_shipped_total",
			Help: "Log records in batches the object store has confirmed."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minimesh_logship_records_dropped_total",
			Help: "Log records dropped before the store had them, by reason: queue_full (the writer fell behind), spool_full (the oldest batches made room), invalid (empty, over-long or holding a newline), spool_error (the spool could not be written), corrupt (a closed batch could not be read back)."}, []string{"reason"}),
		sealed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minimesh_logship_batches_closed_total",
			Help: "Batches closed, by what closed them: size, age, or stop (the proxy stopping)."}, []string{"reason"}),
		batchesUploaded: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_logship_batches_uploaded_total",
			Help: "Batches the object store has confirmed (2xx and a matching checksum)."}),
		batchesFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_logship_batches_failed_total",
			Help: "Failed upload attempts (each is retried with backoff)."}),
		batchesDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "minimesh_logship_batches_dropped_total",
			Help: "Closed batches dropped, oldest first, to keep the spool within spoolBytes."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "minimesh_logship_upload_duration_seconds",
			Help: "Time of one upload attempt.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
	}
	m.dropped.WithLabelValues("queue_full")
	m.dropped.WithLabelValues("spool_full")
	if reg == nil {
		return m, nil
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "minimesh_logship_spool_bytes",
		Help: "Bytes in the spool: closed batches (compressed) and the open batch."}, func() float64 { return float64(spoolBytes()) })
	for _, c := range []prometheus.Collector{m.shipped, m.dropped, m.sealed, m.batchesUploaded, m.batchesFailed, m.batchesDropped, m.latency, gauge} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return nil, err
		}
	}
	return m, nil
}
