package identity

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"minimesh/controlplane/store"
)

// TestRenewQueueIsBounded: a full queue refuses a record with an error
// wrapping store.ErrUnavailable (Renew answers Unavailable naming etcd),
// counts it, and keeps what it held.
func TestRenewQueueIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	q, err := newRenewQueue(2, reg)
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("commit: context deadline exceeded")
	for _, s := range []string{"a", "b"} {
		if err := q.push(renewRecord{cert: &store.Certificate{Serial: s}}, cause); err != nil {
			t.Fatalf("push %s: %v", s, err)
		}
	}
	err = q.push(renewRecord{cert: &store.Certificate{Serial: "c"}}, cause)
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "etcd unreachable") {
		t.Fatalf("push into a full queue: %v, want ErrUnavailable naming etcd", err)
	}
	if q.len() != 2 || value(t, q.queued) != 2 {
		t.Fatalf("queue holds %d (gauge %v), want 2", q.len(), value(t, q.queued))
	}
	if n := value(t, q.dropped.WithLabelValues("queue_full")); n != 1 {
		t.Fatalf("queue_full drops counted: %v, want 1", n)
	}
	if _, st := toStatus(err); !strings.Contains(st.Error(), "Unavailable") {
		t.Fatalf("status of a full queue: %v", st)
	}
	if h := q.head(5); len(h) != 2 || h[0].cert.Serial != "a" {
		t.Fatalf("head: %v", h)
	}
	q.drop(1)
	if h := q.head(5); len(h) != 1 || h[0].cert.Serial != "b" {
		t.Fatalf("after drop(1): %v", h)
	}
}

func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	if out.Gauge != nil {
		return out.Gauge.GetValue()
	}
	return out.Counter.GetValue()
}
