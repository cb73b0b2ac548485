package logadapter

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// sink keeps every record offered, decoded.
type sink struct {
	mu   sync.Mutex
	recs []map[string]any
	raw  []string
}

func (s *sink) Offer(rec []byte) bool {
	var m map[string]any
	if err := json.Unmarshal(rec, &m); err != nil {
		panic(fmt.Sprintf("record is not a JSON object: %v: %q", err, rec))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, m)
	s.raw = append(s.raw, string(rec))
	return true
}

func (s *sink) all() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.recs...)
}

func (s *sink) messages() []string {
	var out []string
	for _, r := range s.all() {
		m, _ := r["message"].(string)
		out = append(out, m)
	}
	return out
}

// waitFor polls cond until it holds or the test's patience (10 s) ends.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func spec(t *testing.T, s *meshv1.LogAdapterSpec) *Spec {
	t.Helper()
	if s.Service == "" {
		s.Service = "api"
	}
	if s.FlushAfter == nil {
		s.FlushAfter = durationpb.New(50 * time.Millisecond)
	}
	sp, err := Compile(&api.LogAdapter{Metadata: api.Metadata{Name: "app-logs", Namespace: "default"}, Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

type running struct {
	a      *Adapter
	sink   *sink
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, shared, state string, sp *Spec, snk *sink) *running {
	t.Helper()
	if snk == nil {
		snk = &sink{}
	}
	reg := prometheus.NewRegistry()
	a, err := New(Config{SharedDir: shared, StateDir: state, Sink: snk, Service: "api", Pod: "api-0",
		Identity: func() string { return "spiffe://minimesh.local/ns/default/sa/api" },
		Poll:     10 * time.Millisecond, PersistEvery: 20 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	a.Set([]*Spec{sp})
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{a: a, sink: snk, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

func appendFile(t *testing.T, p, s string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func sharedDir(t *testing.T) string {
	d := t.TempDir()
	if err := os.Mkdir(filepath.Join(d, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

const trace = "2030-01-02 ERROR boom\n" +
	"java.lang.IllegalStateException: boom\n" +
	"\tat com.example.Api.handle(Api.java:42)\n" +
	"\tat com.example.Main.main(Main.java:7)\n"

func TestMultiLineRecordAndFields(t *testing.T) {
	shared := sharedDir(t)
	r := start(t, shared, t.TempDir(), spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/*.log"}, RecordStart: `\d{4}-\d\d-\d\d `}), nil)
	appendFile(t, filepath.Join(shared, "logs/app.log"), "2030-01-02 INFO started\n"+trace+"2030-01-02 INFO next\n")
	waitFor(t, "3 records", func() bool { return len(r.sink.all()) == 3 })
	recs := r.sink.all()
	if got, want := recs[1]["message"], strings.TrimSuffix(trace, "\n"); got != want {
		t.Errorf("stack trace record = %q, want %q", got, want)
	}
	for k, want := range map[string]any{"source": "app", "service": "api", "pod": "api-0", "file": "logs/app.log",
		"identity": "spiffe://minimesh.local/ns/default/sa/api"} {
		if recs[1][k] != want {
			t.Errorf("%s = %v, want %v", k, recs[1][k], want)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(shared, "logs/app.log"), &st); err != nil {
		t.Fatal(err)
	}
	if got, want := recs[1]["record_id"], fmt.Sprintf("%d-0-%d", st.Ino, len("2030-01-02 INFO started\n")); got != want {
		t.Errorf("record_id = %v, want %v", got, want)
	}
	// The last record had no following line: flushAfter emitted it.
	if recs[2]["message"] != "2030-01-02 INFO next" {
		t.Errorf("last record = %v", recs[2]["message"])
	}
}

func TestRotationByRenameAndTruncation(t *testing.T) {
	shared := sharedDir(t)
	r := start(t, shared, t.TempDir(), spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}}), nil)
	p := filepath.Join(shared, "logs/app.log")
	appendFile(t, p, "one\ntwo\n")
	waitFor(t, "2 records", func() bool { return len(r.sink.all()) == 2 })
	// Rename rotation: the app still writes a line to the old file (its
	// descriptor) before it reopens.
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p+".1", "three\n")
	appendFile(t, p, "four\n")
	waitFor(t, "4 records", func() bool { return len(r.sink.all()) == 4 })
	// Truncation (copytruncate).
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p, "5\n")
	waitFor(t, "5 records", func() bool { return len(r.sink.all()) == 5 })
	r.stop(t)
	got := strings.Join(r.sink.messages(), ",")
	if got != "one,two,three,four,5" {
		t.Errorf("records = %s, want one,two,three,four,5 (each once, the old file's end first)", got)
	}
	ids := map[any]bool{}
	for _, rec := range r.sink.all() {
		if ids[rec["record_id"]] {
			t.Errorf("record_id %v twice", rec["record_id"])
		}
		ids[rec["record_id"]] = true
	}
}

func TestSymlinkAndFIFOAreNotRead(t *testing.T) {
	shared := sharedDir(t)
	secretDir := t.TempDir()
	key := filepath.Join(secretDir, "svid.key")
	if err := os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----\nSECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(key, filepath.Join(shared, "logs/key.log")); err != nil {
		t.Fatal(err)
	}
	// A directory symlink on the path, and a relative link escaping.
	if err := os.Symlink(secretDir, filepath.Join(shared, "logs/sub")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../"+filepath.Base(secretDir)+"/svid.key", filepath.Join(shared, "logs/rel.log")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(shared, "logs/fifo.log"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, noOpenat2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("noOpenat2=%v", noOpenat2), func(t *testing.T) {
			if noOpenat2 {
				old := openat2Func
				openat2Func = func(int, string, int) (int, error) { return -1, unix.ENOSYS }
				t.Cleanup(func() { openat2Func = old })
			}
			r := start(t, shared, t.TempDir(), spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/*.log", "logs/sub/svid.key", "logs/*/svid.key"}}), nil)
			appendFile(t, filepath.Join(shared, "logs/z.log"), "plain\n")
			waitFor(t, "the regular file's record", func() bool { return len(r.sink.all()) >= 1 })
			r.stop(t)
			for _, raw := range r.sink.raw {
				if strings.Contains(raw, "SECRET") || strings.Contains(raw, "PRIVATE") {
					t.Fatalf("read through a symbolic link: %s", raw)
				}
			}
			if got := strings.Join(r.sink.messages(), ","); got != "plain" {
				t.Errorf("records = %q, want only plain", got)
			}
			if n := value(r.a.skipped.WithLabelValues("not_regular")); n < 3 {
				t.Errorf("skipped{not_regular} = %v, want at least 3 (two links and the FIFO)", n)
			}
		})
		if err := os.Remove(filepath.Join(shared, "logs/z.log")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenNoFollowRefusesLinks checks the fallback walk by itself.
func TestOpenNoFollowRefusesLinks(t *testing.T) {
	shared := sharedDir(t)
	out := t.TempDir()
	if err := os.WriteFile(filepath.Join(out, "k"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(out, filepath.Join(shared, "logs/d")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shared, "logs/ok"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := openRoot(shared)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.noAt2 = true
	if f, _, err := r.openRegular("logs/d/k"); err == nil {
		f.Close()
		t.Error("opened a file through a symlinked directory")
	}
	for _, bad := range []string{"../x", "logs/../../x", "/etc/passwd"} {
		if f, err := r.open(bad, false); err == nil {
			f.Close()
			t.Errorf("opened %q", bad)
		}
	}
	f, _, err := r.openRegular("logs/ok")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestShutdownNeitherLosesNorRepeats(t *testing.T) {
	shared, state := sharedDir(t), t.TempDir()
	sp := spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}, RecordStart: `\d{4}-`,
		FlushAfter: durationpb.New(time.Minute)})
	p := filepath.Join(shared, "logs/app.log")
	all := &sink{}
	r := start(t, shared, state, sp, all)
	lines := strings.SplitAfter(trace, "\n")
	appendFile(t, p, "2030-a\n"+lines[0]+lines[1])
	waitFor(t, "the first record", func() bool { return len(all.all()) == 1 })
	// Half a stack trace is pending (flushAfter 1m) when SIGTERM comes:
	// it is not emitted, and the restart reads it whole.
	r.stop(t)
	if n := len(all.all()); n != 1 {
		t.Fatalf("after shutdown %d records, want 1 (the growing stack trace left for the next run)", n)
	}
	appendFile(t, p, lines[2]+lines[3]+"2030-c\n")
	r2 := start(t, shared, state, sp, all)
	waitFor(t, "the stack trace", func() bool { return len(all.all()) >= 2 })
	r2.stop(t)
	// 2030-c is pending at the second stop too; a third run gets it.
	r3 := start(t, shared, state, spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}, RecordStart: `\d{4}-`}), all)
	waitFor(t, "the last record", func() bool { return len(all.all()) >= 3 })
	r3.stop(t)
	if got := strings.Join(all.messages(), "|"); got != "2030-a|"+strings.TrimSuffix(trace, "\n")+"|2030-c" {
		t.Errorf("records = %q", got)
	}
}

// TestShutdownEmitsIdleRecords: the app stopped before the proxy (a pod
// going away): its last record, idle for flushAfter, is emitted at
// shutdown, not left behind.
func TestShutdownEmitsIdleRecords(t *testing.T) {
	shared := sharedDir(t)
	sp := spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}, RecordStart: `\d{4}-`, FlushAfter: durationpb.New(300 * time.Millisecond)})
	all := &sink{}
	r := start(t, shared, t.TempDir(), sp, all)
	appendFile(t, filepath.Join(shared, "logs/app.log"), "2030-last words\n  at the end\n")
	r.stop(t)
	if got := strings.Join(all.messages(), "|"); got != "2030-last words\n  at the end" {
		t.Errorf("records = %q, want the last one emitted at shutdown", got)
	}
}

// TestCrashRepeatsNothingBeyondTheLastPersist: a SIGKILL leaves the state
// file as last written; a restart from it repeats only records emitted
// after that (same IDs) and loses none.
func TestCrashRepeatsAtMostSinceLastPersist(t *testing.T) {
	shared, state := sharedDir(t), t.TempDir()
	sp := spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}})
	p := filepath.Join(shared, "logs/app.log")
	first := &sink{}
	r := start(t, shared, state, sp, first)
	for i := range 50 {
		appendFile(t, p, fmt.Sprintf("line %d\n", i))
	}
	waitFor(t, "50 records and their offsets saved", func() bool {
		b, _ := os.ReadFile(filepath.Join(state, StateFile))
		return len(first.all()) == 50 && strings.Contains(string(b), fmt.Sprintf(`"offset":%d`, fileSize(t, p)))
	})
	crashed := t.TempDir() // the state as a SIGKILL now would leave it
	copyFile(t, filepath.Join(state, StateFile), filepath.Join(crashed, StateFile))
	for i := 50; i < 60; i++ {
		appendFile(t, p, fmt.Sprintf("line %d\n", i))
	}
	waitFor(t, "60 records", func() bool { return len(first.all()) == 60 })
	r.stop(t)
	second := &sink{}
	r2 := start(t, shared, crashed, sp, second)
	waitFor(t, "the repeated records", func() bool { return len(second.all()) == 10 })
	time.Sleep(50 * time.Millisecond)
	r2.stop(t)
	if got := strings.Join(second.messages(), ","); got != "line 50,line 51,line 52,line 53,line 54,line 55,line 56,line 57,line 58,line 59" {
		t.Errorf("after the crash: %s (want exactly the 10 after the last persist)", got)
	}
	ids := map[any]bool{}
	for _, rec := range first.all()[50:] {
		ids[rec["record_id"]] = true
	}
	for _, rec := range second.all() {
		if !ids[rec["record_id"]] {
			t.Errorf("repeated record %v has a new ID %v", rec["message"], rec["record_id"])
		}
	}
}

func fileSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestMaxRecordBytes(t *testing.T) {
	shared := sharedDir(t)
	r := start(t, shared, t.TempDir(), spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/*.log"}, RecordStart: `START`, MaxRecordBytes: 100}), nil)
	p := filepath.Join(shared, "logs/app.log")
	// A 1 MiB line without a newline, then more of it, then a record.
	huge := strings.Repeat("x", 1<<20)
	appendFile(t, p, "START "+huge)
	appendFile(t, p, huge+"\n  continuation of the cut record\nSTART small\n  more\n")
	// A long multi-line record: cut at 100 bytes, its later lines dropped.
	appendFile(t, p, "START long\n"+strings.Repeat("  at frame\n", 50)+"START end\n")
	waitFor(t, "4 records", func() bool { return len(r.sink.all()) == 4 })
	recs := r.sink.all()
	for i, want := range []struct {
		msg   string
		trunc bool
	}{
		{"START " + huge[:94], true},
		{"START small\n  more", false},
		{("START long" + strings.Repeat("\n  at frame", 10))[:100], true},
		{"START end", false},
	} {
		if recs[i]["message"] != want.msg || (recs[i]["truncated"] == true) != want.trunc {
			t.Errorf("record %d = %.120q truncated=%v, want %.120q truncated=%v", i, recs[i]["message"], recs[i]["truncated"], want.msg, want.trunc)
		}
	}
	if n := value(r.a.truncatedRecs); n != 2 {
		t.Errorf("truncated_total = %v, want 2", n)
	}
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    *meshv1.LogAdapterSpec
		line    string
		want    map[string]any
		notWant []string
	}{
		{"json object", &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_JSON},
			`{"level":"info","msg":"hi","n":3,"source":"db","nested":{"a": [1, 2]},"time":"T"}`,
			map[string]any{"level": "info", "msg": "hi", "n": 3.0, "app_source": "db", "source": "app", "nested": map[string]any{"a": []any{1.0, 2.0}}, "time": "T"}, nil},
		{"json tricky", &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_JSON},
			`{ "a\"b" : "x,}{" , "arr":[{"c":"]"}, 2], "n":-1.5e3, "file":{"x":null} }`,
			map[string]any{"a\"b": "x,}{", "arr": []any{map[string]any{"c": "]"}, 2.0}, "n": -1500.0, "app_file": map[string]any{"x": nil}, "file": "logs/app.log"}, []string{"message"}},
		{"json not an object", &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_JSON},
			`[1,2] plain`, map[string]any{"message": "[1,2] plain"}, nil},
		{"logfmt", &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_LOGFMT},
			`level=warn msg="disk \"full\"" retry pod=p9`, map[string]any{"level": "warn", "msg": `disk "full"`, "retry": true, "app_pod": "p9", "pod": "api-0"}, []string{"message"}},
		{"logfmt broken", &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_LOGFMT},
			`level="unterminated`, map[string]any{"message": `level="unterminated`}, nil},
		{"regex", &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_REGEX, Pattern: `^(?P<level>[A-Z]+) (?P<text>.*)$`},
			"WARN low \x1b[31mred", map[string]any{"level": "WARN", "text": "low \x1b[31mred"}, []string{"message"}},
		{"regex whole record", &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_REGEX, RecordStart: `\d`,
			Pattern: `^(?P<time>\S+) (?P<level>[A-Z]+) (?P<message>(?s:.*))`},
			"2030-01-02T03:04:05Z ERROR boom\n  at x\n  at y", map[string]any{"level": "ERROR", "message": "boom\n  at x\n  at y"}, []string{"continuation"}},
		{"regex first line", &meshv1.LogAdapterSpec{Format: meshv1.LogFormat_LOG_FORMAT_REGEX, RecordStart: `\d`,
			Pattern: `^(?P<time>\S+) (?P<level>[A-Z]+) (?P<msg>.*)$`},
			"2030-01-02T03:04:05Z ERROR boom\n  at x", map[string]any{"level": "ERROR", "msg": "boom", "continuation": "  at x"}, nil},
		{"text control characters", &meshv1.LogAdapterSpec{},
			"a\x00b\x7f\xff\u2028", map[string]any{"message": "a\x00b\x7f\ufffd\u2028"}, nil},
		{"fields chosen", &meshv1.LogAdapterSpec{Fields: []string{"file"}},
			"x", map[string]any{"file": "logs/app.log"}, []string{"service", "pod", "identity"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shared := sharedDir(t)
			tc.spec.Files = []string{"logs/app.log"}
			r := start(t, shared, t.TempDir(), spec(t, tc.spec), nil)
			appendFile(t, filepath.Join(shared, "logs/app.log"), tc.line+"\n")
			waitFor(t, "the record", func() bool { return len(r.sink.all()) == 1 })
			rec := r.sink.all()[0]
			for k, v := range tc.want {
				if g, _ := json.Marshal(rec[k]); string(g) != mustJSON(v) {
					t.Errorf("%s = %s, want %s (record %s)", k, g, mustJSON(v), r.sink.raw[0])
				}
			}
			for _, k := range tc.notWant {
				if _, ok := rec[k]; ok {
					t.Errorf("%s present: %s", k, r.sink.raw[0])
				}
			}
			if strings.ContainsAny(r.sink.raw[0], "\x00\x1b\x7f\n") {
				t.Errorf("raw control characters in %q", r.sink.raw[0])
			}
		})
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestMaxOpenFilesAndLiveSet(t *testing.T) {
	shared := sharedDir(t)
	snk := &sink{}
	a, err := New(Config{SharedDir: shared, Sink: snk, Poll: 10 * time.Millisecond, MaxOpenFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for i := range 4 {
		appendFile(t, filepath.Join(shared, fmt.Sprintf("logs/%d.log", i)), fmt.Sprintf("f%d\n", i))
	}
	// No LogAdapter: nothing read. Then one is set live.
	time.Sleep(30 * time.Millisecond)
	if n := len(snk.all()); n != 0 {
		t.Fatalf("%d records before any LogAdapter", n)
	}
	a.Set([]*Spec{spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/*.log"}})})
	waitFor(t, "2 records (2 files open at most)", func() bool { return len(snk.all()) >= 2 })
	// Removed: the two open files close once idle, the other two are read.
	a.Set(nil)
	a.Set([]*Spec{spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/*.log"}})})
	waitFor(t, "all 4 files read", func() bool { return len(snk.all()) >= 4 || value(a.skipped.WithLabelValues("too_many_files")) > 0 })
	if n := value(a.skipped.WithLabelValues("too_many_files")); n == 0 {
		t.Error("too_many_files not counted")
	}
}

// value is a counter's or gauge's value.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// TestRotationWhileDown: the file is renamed away while the proxy is down;
// the restart reads the old file's rest (found by inode) before the new one.
func TestRotationWhileDown(t *testing.T) {
	shared, state := sharedDir(t), t.TempDir()
	sp := spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}, RecordStart: `\d{4}-`})
	p := filepath.Join(shared, "logs/app.log")
	all := &sink{}
	r := start(t, shared, state, sp, all)
	appendFile(t, p, "2030-a\n")
	waitFor(t, "the first record", func() bool { return len(all.all()) == 1 })
	r.stop(t)
	appendFile(t, p, trace)
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, p, "2030-b\n")
	r2 := start(t, shared, state, sp, all)
	waitFor(t, "3 records", func() bool { return len(all.all()) >= 3 })
	r2.stop(t)
	if got := strings.Join(all.messages(), "|"); got != "2030-a|"+strings.TrimSuffix(trace, "\n")+"|2030-b" {
		t.Errorf("records = %q", got)
	}
}

// TestInodeReuseStartsFromZero: the offsets name an inode whose file is
// now another (the old one deleted, its inode reused): its first bytes
// differ, so it is read from its start, with a new generation in its IDs.
func TestInodeReuseStartsFromZero(t *testing.T) {
	shared, state := sharedDir(t), t.TempDir()
	p := filepath.Join(shared, "logs/app.log")
	appendFile(t, p, "new file line one\nnew file line two\n")
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	// As the old file left them: offset 18, its first 18 bytes' CRC.
	if err := saveState(state, []fileState{{Dev: uint64(st.Dev), Ino: st.Ino, Offset: 18, Head: 0xdeadbeef, HeadLen: 18, Path: "logs/app.log"}}); err != nil {
		t.Fatal(err)
	}
	r := start(t, shared, state, spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}}), nil)
	waitFor(t, "2 records", func() bool { return len(r.sink.all()) == 2 })
	if got := r.sink.all()[0]; got["message"] != "new file line one" || got["record_id"] != fmt.Sprintf("%d-1-0", st.Ino) {
		t.Errorf("first record %v, want the new file's first line with generation 1", got)
	}
	r.stop(t)
	// The same file again: its fingerprint matches, nothing is repeated.
	again := &sink{}
	appendFile(t, p, "three\n")
	r2 := start(t, shared, state, spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}}), again)
	waitFor(t, "the new line", func() bool { return len(again.all()) >= 1 })
	r2.stop(t)
	if got := strings.Join(again.messages(), ","); got != "three" {
		t.Errorf("after a restart: %q, want only three", got)
	}
}

// TestAdapterRemovedAndBack: a LogAdapter removed closes its files; added
// again, it goes on where it stopped.
func TestAdapterRemovedAndBack(t *testing.T) {
	shared := sharedDir(t)
	sp := spec(t, &meshv1.LogAdapterSpec{Files: []string{"logs/app.log"}})
	r := start(t, shared, t.TempDir(), sp, nil)
	p := filepath.Join(shared, "logs/app.log")
	appendFile(t, p, "a\n")
	waitFor(t, "a", func() bool { return len(r.sink.all()) == 1 })
	r.a.Set(nil)
	waitFor(t, "the file closed", func() bool { return value(r.a.open) == 0 })
	appendFile(t, p, "b\n")
	r.a.Set([]*Spec{sp})
	waitFor(t, "b", func() bool { return len(r.sink.all()) >= 2 })
	r.stop(t)
	if got := strings.Join(r.sink.messages(), ","); got != "a,b" {
		t.Errorf("records = %q, want a,b", got)
	}
}
