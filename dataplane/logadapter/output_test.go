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
	o, err := NewOutput(OutputConfig{Writer: w})
	if err != nil {
		t.Fatal(err)
	}
	outCtx, outStop := context.WithCancel(context.Background())
	outDone := make(chan error, 1)
	go func() { outDone <- o.Run(outCtx) }()
	defer func() { outStop(); <-outDone }()
	shared, state := sharedDir(t), t.TempDir()
	a, err := New(Config{SharedDir: shared, StateDir: state, Sink: o, Progress: []func() (uint64, uint64){o.Progress},
		Poll: 5 * time.Millisecond, PersistEvery: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a.Set([]*Spec{spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}})})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	p := filepath.Join(shared, "logs/app.log")
	appendFile(t, p, "one\ntwo\nthree\n")
	waitFor(t, "the records accepted", func() bool { acc, _ := o.Progress(); return acc >= 2 })
	time.Sleep(50 * time.Millisecond) // ten persist intervals
	saved := func() int64 {
		st, _ := loadState(state)
		for _, f := range st {
			return f.Offset
		}
		return 0
	}
	if off := saved(); off != 0 {
		t.Errorf("offset %d persisted while the output has written nothing", off)
	}
	close(w.release)
	waitFor(t, "the offsets after the write", func() bool { return saved() == fileSize(t, p) })
	cancel()
	<-done
}

// With two sinks that keep records (the output and the log shipper's
// spool), offsets wait for the slower one.
func TestOffsetsWaitForEverySink(t *testing.T) {
	fast, err := NewOutput(OutputConfig{Writer: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	w := &blockingWriter{release: make(chan struct{})}
	slow, err := NewOutput(OutputConfig{Writer: w})
	if err != nil {
		t.Fatal(err)
	}
	outCtx, outStop := context.WithCancel(context.Background())
	outDone := make(chan error, 2)
	go func() { outDone <- fast.Run(outCtx) }()
	go func() { outDone <- slow.Run(outCtx) }()
	defer func() { outStop(); <-outDone; <-outDone }()
	shared, state := sharedDir(t), t.TempDir()
	a, err := New(Config{SharedDir: shared, StateDir: state, Sink: logrecord.Sinks{fast, slow},
		Progress: []func() (uint64, uint64){fast.Progress, slow.Progress},
		Poll:     5 * time.Millisecond, PersistEvery: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a.Set([]*Spec{spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}})})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	p := filepath.Join(shared, "logs/app.log")
	appendFile(t, p, "one\ntwo\nthree\n")
	waitFor(t, "the fast sink wrote", func() bool { _, w := fast.Progress(); return w >= 3 })
	time.Sleep(50 * time.Millisecond) // ten persist intervals
	saved := func() int64 {
		st, _ := loadState(state)
		for _, f := range st {
			return f.Offset
		}
		return 0
	}
	if off := saved(); off != 0 {
		t.Errorf("offset %d persisted while one sink has written nothing", off)
	}
	close(w.release)
	waitFor(t, "the offsets after the slow sink's write", func() bool { return saved() == fileSize(t, p) })
	cancel()
	<-done
}
