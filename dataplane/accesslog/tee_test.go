package accesslog

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	meshv1 "minimesh/proto/mesh/v1"
)

// recordSink keeps copies of what it is offered, up to max records.
type recordSink struct {
	mu   sync.Mutex
	recs [][]byte
	take bool
}

func (s *recordSink) Offer(rec []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.take {
		return false
	}
	s.recs = append(s.recs, bytes.Clone(rec))
	return true
}

// failWriter fails every write.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestTeeGetsEachLineWithoutNewline(t *testing.T) {
	var out bytes.Buffer
	tee := &recordSink{take: true}
	l := New(Config{Output: &out, Clock: newClock(), Tee: tee})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"path", "status"}})); err != nil {
		t.Fatal(err)
	}
	l.Log(fullEntry())
	e := fullEntry()
	e.Path = "/second\n{\"forged\":1}"
	l.Log(e)
	got := lines(t, out.Bytes())
	if len(got) != 2 || len(tee.recs) != 2 {
		t.Fatalf("output %v, tee %q", got, tee.recs)
	}
	outLines := bytes.SplitAfter(out.Bytes(), []byte("\n"))
	for i, r := range tee.recs {
		if string(r)+"\n" != string(outLines[i]) {
			t.Errorf("tee record %q, output line %q", r, outLines[i])
		}
		if bytes.IndexByte(r, '\n') >= 0 {
			t.Errorf("tee record %q holds a newline", r)
		}
	}
	// A failing output does not keep the line from the tee, nor a
	// refusing tee the line from the output.
	l2 := New(Config{Output: failWriter{}, Clock: newClock(), Tee: tee})
	if err := l2.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true})); err != nil {
		t.Fatal(err)
	}
	l2.Log(fullEntry())
	if len(tee.recs) != 3 {
		t.Errorf("tee got %d records after a failed write, want 3", len(tee.recs))
	}
	tee.take = false
	out.Reset()
	l.Log(fullEntry())
	if out.Len() == 0 {
		t.Error("a refusing tee kept the line from the output")
	}
}

// nopSink takes nothing: the shipper while no LogShipping applies.
type nopSink struct{}

func (nopSink) Offer([]byte) bool { return false }

func TestTeeNoAllocs(t *testing.T) {
	l := New(Config{Output: io.Discard, Clock: newClock(), Tee: nopSink{}})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true})); err != nil {
		t.Fatal(err)
	}
	e := fullEntry()
	if n := testing.AllocsPerRun(1000, func() { l.Log(e) }); n != 0 {
		t.Errorf("Log with a tee: %v allocations", n)
	}
}
