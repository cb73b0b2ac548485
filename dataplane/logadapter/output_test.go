package logadapter

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"minimesh/dataplane/logrecord"
	meshv1 "minimesh/proto/mesh/v1"
)

// blockingWriter blocks every Write until released.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func TestOutputDropsWhenBlocked(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	o, err := NewOutput(OutputConfig{Writer: w, MaxQueue: 4, MaxQueueBytes: 1 << 20, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	// The writer is blocked: Offer must neither wait nor grow the queue.
	took, refused := 0, 0
	for range 100 {
		if o.Offer([]byte(`{"a":1}`)) {
			took++
		} else {
			refused++
		}
	}
	if took > 5 || refused < 95 {
		t.Fatalf("took %d, refused %d: want at most the queue (4) plus one being written", took, refused)
	}
	if n := value(o.dropped); n != float64(refused) {
		t.Errorf("dropped_total = %v, want %d", n, refused)
	}
	close(w.release)
	cancel()
	<-done
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := bytes.Count(w.buf.Bytes(), []byte("\n")); got != took {
		t.Errorf("wrote %d lines, want the %d taken (drained at shutdown)", got, took)
	}
}

func TestOutputBoundsBytes(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	defer close(w.release)
	o, err := NewOutput(OutputConfig{Writer: w, MaxQueueBytes: 1000, Drain: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 600)
	if !o.Offer(big) {
		t.Fatal("first record refused")
	}
	if o.Offer(big) {
		t.Fatal("took 1202 bytes with MaxQueueBytes 1000")
	}
}

// TestOffsetsWaitForTheOutput: records accepted by the output but not
// written yet (stdout blocked) are not covered by the persisted offsets,
// so a SIGKILL then cannot lose them; once written, the offsets follow.
func TestOffsetsWaitForTheOutput(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	o := runOutput(t, w)
	offsetsWaitFor(t, []*Output{o}, w, "the records accepted", func() bool { acc, _ := o.Progress(); return acc >= 2 })
}

// With two sinks that keep records (the output and the log shipper's
// spool), offsets wait for the slower one.
func TestOffsetsWaitForEverySink(t *testing.T) {
	fast := runOutput(t, io.Discard)
	w := &blockingWriter{release: make(chan struct{})}
	slow := runOutput(t, w)
	offsetsWaitFor(t, []*Output{fast, slow}, w, "the fast sink wrote", func() bool { _, n := fast.Progress(); return n >= 3 })
}

// runOutput runs an Output writing to w until the test ends.
func runOutput(t *testing.T, w io.Writer) *Output {
	t.Helper()
	o, err := NewOutput(OutputConfig{Writer: w})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	return o
}

// offsetsWaitFor runs an adapter whose records go to outs (each a sink of
// Config.Progress), writes three records and, once ready, checks that no
// offset is persisted while the output behind slow has written nothing,
// and that the offsets follow once it writes.
func offsetsWaitFor(t *testing.T, outs []*Output, slow *blockingWriter, what string, ready func() bool) {
	t.Helper()
	var sinks logrecord.Sinks
	var progress []func() (uint64, uint64)
	for _, o := range outs {
		sinks = append(sinks, o)
		progress = append(progress, o.Progress)
	}
	shared, state := sharedDir(t), t.TempDir()
	a, err := New(Config{SharedDir: shared, StateDir: state, Sink: sinks, Progress: progress,
		Poll: 5 * time.Millisecond, PersistEvery: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a.Set([]*Spec{spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}})})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	p := filepath.Join(shared, "logs/app.log")
	appendFile(t, p, "one\ntwo\nthree\n")
	waitFor(t, what, ready)
	time.Sleep(50 * time.Millisecond) // ten persist intervals
	saved := func() int64 {
		st, _ := loadState(state)
		for _, f := range st {
			return f.Offset
		}
		return 0
	}
	if off := saved(); off != 0 {
		t.Errorf("offset %d persisted while an output has written nothing", off)
	}
	close(slow.release)
	waitFor(t, "the offsets after the write", func() bool { return saved() == fileSize(t, p) })
}
