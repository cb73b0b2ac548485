package logadapter

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// countSink counts records and keeps nothing (the output's copy is not
// what is measured here).
type countSink struct{ n int }

func (c *countSink) Offer([]byte) bool { c.n++; return true }

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchAdapter writes b.N records (each of linesPer lines) to a file,
// then times the adapter reading it: follow, split, assemble, encode and
// offer each record. Reported: records/s, lines/s and the process's CPU
// time per 100k records (user+system, GC included).
func benchAdapter(b *testing.B, s *meshv1.LogAdapterSpec, line func(i int) string, linesPer int) {
	shared := b.TempDir()
	if err := os.Mkdir(filepath.Join(shared, "logs"), 0o755); err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(filepath.Join(shared, "logs/app.log"))
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var size int64
	for i := range b.N {
		n, _ := w.WriteString(line(i))
		size += int64(n)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	s.Service, s.Files = "api", []string{"logs/*.log"}
	sp, err := Compile(&api.LogAdapter{Metadata: api.Metadata{Name: "bench", Namespace: "default"}, Spec: s})
	if err != nil {
		b.Fatal(err)
	}
	sink := &countSink{}
	a, err := New(Config{SharedDir: shared, Sink: sink, Service: "api", Pod: "api-0"})
	if err != nil {
		b.Fatal(err)
	}
	a.Set([]*Spec{sp})
	if a.root, err = openRoot(shared); err != nil {
		b.Fatal(err)
	}
	defer a.root.Close()
	b.SetBytes(size / int64(b.N))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	for read := int64(0); read < size; {
		a.poll(false)
		read = 0
		for _, t := range a.files {
			read += t.off
		}
	}
	for _, t := range a.files {
		t.flush(a.emit)
	}
	b.StopTimer()
	cpu, wall := cpuTime()-cpu0, time.Since(t0)
	if sink.n != b.N {
		b.Fatalf("%d records, want %d", sink.n, b.N)
	}
	b.ReportMetric(float64(b.N)/wall.Seconds(), "records/s")
	b.ReportMetric(float64(b.N*linesPer)/wall.Seconds(), "lines/s")
	b.ReportMetric(cpu.Seconds()*1000*100000/float64(b.N), "cpu-ms/100k")
}

const benchLine = `2030-01-02T03:04:05.678Z INFO request handled method=GET path=/orders/%d status=200 duration_ms=1.204` + "\n"

func BenchmarkAdapterText(b *testing.B) {
	benchAdapter(b, &meshv1.LogAdapterSpec{}, func(i int) string { return fmt.Sprintf(benchLine, i) }, 1)
}

func BenchmarkAdapterLogfmt(b *testing.B) {
	benchAdapter(b, &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_LOGFMT}, func(i int) string {
		return fmt.Sprintf(`time=2030-01-02T03:04:05.678Z level=info msg="request handled" path=/orders/%d status=200`+"\n", i)
	}, 1)
}

func BenchmarkAdapterJSON(b *testing.B) {
	benchAdapter(b, &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_JSON}, func(i int) string {
		return fmt.Sprintf(`{"time":"2030-01-02T03:04:05.678Z","level":"info","msg":"request handled","path":"/orders/%d","status":200}`+"\n", i)
	}, 1)
}

// A Java-style stack trace: one start line and four continuation lines
// per record.
func BenchmarkAdapterMultiLine(b *testing.B) {
	benchAdapter(b, &meshv1.LogAdapterSpec{RecordStart: `\d{4}-\d\d-\d\dT`}, func(i int) string {
		return fmt.Sprintf("2030-01-02T03:04:05.678Z ERROR order %d failed\n", i) +
			"java.lang.IllegalStateException: no stock\n" +
			"\tat com.example.orders.Stock.take(Stock.java:42)\n" +
			"\tat com.example.orders.Api.handle(Api.java:17)\n" +
			"\tat com.example.Main.main(Main.java:7)\n"
	}, 5)
}
