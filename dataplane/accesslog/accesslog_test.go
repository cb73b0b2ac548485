package accesslog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"go.uber.org/goleak"

	"minimesh/api"
	"minimesh/certs/certstest"
	meshv1 "minimesh/proto/mesh/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func accessLog(spec *meshv1.AccessLogSpec) *api.AccessLog {
	spec.Service = "api"
	return &api.AccessLog{Metadata: api.Metadata{Name: "api", Namespace: "prod"}, Spec: spec}
}

func fullEntry() *Entry {
	return &Entry{
		Time:           time.Date(2030, 1, 2, 3, 4, 5, 6_000_000, time.FixedZone("x", 3600)),
		SourceIdentity: "spiffe://minimesh.local/ns/prod/sa/web",
		SourceAddress:  "10.0.0.7:43210",
		Method:         "POST",
		Authority:      "api.prod",
		Path:           "/orders/42",
		Protocol:       "HTTP/2.0",
		Route:          "10-orders",
		Status:         201,
		BytesReceived:  123,
		BytesSent:      4567,
		Duration:       12345678 * time.Nanosecond,
		Upstream:       "127.0.0.1:8080",
		Retries:        1,
		UserAgent:      "curl/8.5.0",
		RequestID:      "0f8fad5b-d9cb-469f-a165-70867728950e",
		AuthzDecision:  "allow",
	}
}

// lines splits out into lines, failing unless each is one JSON object.
func lines(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	var got []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, m)
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		t.Fatalf("output does not end with a newline: %q", out)
	}
	return got
}

func TestAllFields(t *testing.T) {
	var out bytes.Buffer
	l := New(Config{Output: &out, Clock: newClock()})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: api.AccessLogFields()})); err != nil {
		t.Fatal(err)
	}
	l.Log(fullEntry())
	want := `{"time":"2030-01-02T02:04:05.006Z","source_identity":"spiffe://minimesh.local/ns/prod/sa/web",` +
		`"source_address":"10.0.0.7:43210","method":"POST","authority":"api.prod","path":"/orders/42",` +
		`"protocol":"HTTP/2.0","route":"10-orders","status":201,"bytes_received":123,"bytes_sent":4567,` +
		`"duration_ms":12.346,"upstream":"127.0.0.1:8080","retries":1,"user_agent":"curl/8.5.0",` +
		`"request_id":"0f8fad5b-d9cb-469f-a165-70867728950e","authz_decision":"allow"}` + "\n"
	if out.String() != want {
		t.Fatalf("line:\n%s\nwant:\n%s", out.String(), want)
	}
	// response_flags is left out of a response that ended normally.
	if got := lines(t, out.Bytes()); len(got) != 1 || len(got[0]) != len(api.AccessLogFields())-1 {
		t.Fatalf("decoded %v", got)
	}
}

func TestFieldSelection(t *testing.T) {
	tests := []struct {
		name   string
		fields []string
		want   string
	}{
		{"default", nil, `{"time":"2030-01-02T02:04:05.006Z","source_identity":"spiffe://minimesh.local/ns/prod/sa/web",` +
			`"method":"POST","path":"/orders/42","route":"10-orders","status":201,"bytes_received":123,"bytes_sent":4567,"duration_ms":12.346}`},
		{"chosen, in the spec's order", []string{"status", "path", "request_id"},
			`{"status":201,"path":"/orders/42","request_id":"0f8fad5b-d9cb-469f-a165-70867728950e"}`},
		{"one", []string{"upstream"}, `{"upstream":"127.0.0.1:8080"}`},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		l := New(Config{Output: &out})
		if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: tt.fields})); err != nil {
			t.Fatal(err)
		}
		l.Log(fullEntry())
		if out.String() != tt.want+"\n" {
			t.Errorf("%s:\n%s\nwant:\n%s", tt.name, out.String(), tt.want)
		}
	}
}

func TestLogInjectionEscaped(t *testing.T) {
	var out bytes.Buffer
	l := New(Config{Output: &out})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"path", "user_agent", "request_id", "authority"}})); err != nil {
		t.Fatal(err)
	}
	e := &Entry{
		Path:      "/x\n{\"path\":\"/forged\",\"status\":200}\n\x1b[31mred\x1b[0m",
		UserAgent: "a\r\nb\tc\x00d\x7fe\u0085f\u2028g\u2029h",
		RequestID: `quote" backslash\ end`,
		Authority: "bad\xff\xfeutf8",
	}
	l.Log(e)
	raw := out.Bytes()
	if n := bytes.Count(raw, []byte("\n")); n != 1 || raw[len(raw)-1] != '\n' {
		t.Fatalf("%d newlines in %q: a field started a new line", n, raw)
	}
	for _, c := range []byte{0x1b, '\r', 0x00, 0x7f, '\t'} {
		if bytes.IndexByte(raw, c) >= 0 {
			t.Errorf("raw byte %#x in the line %q", c, raw)
		}
	}
	for _, s := range []string{"\u0085", "\u2028", "\u2029"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("raw %U in the line", []rune(s)[0])
		}
	}
	for _, esc := range []string{`\n`, `\u001b[31m`, `\r`, `\t`, `\u0000`, `\u007f`, `\u0085`, `\u2028`, `\u2029`, `\"`, `\\`, `\ufffd`} {
		if !bytes.Contains(raw, []byte(esc)) {
			t.Errorf("escape %s missing from %s", esc, raw)
		}
	}
	got := lines(t, raw)
	if len(got) != 1 || got[0]["path"] != e.Path || got[0]["user_agent"] != e.UserAgent || got[0]["request_id"] != e.RequestID {
		t.Errorf("round trip: %v", got)
	}
	if got[0]["authority"] != "bad\ufffd\ufffdutf8" {
		t.Errorf("invalid UTF-8: %q", got[0]["authority"])
	}
}

func TestLongFieldsCut(t *testing.T) {
	var out bytes.Buffer
	l := New(Config{Output: &out})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"path"}})); err != nil {
		t.Fatal(err)
	}
	long := "/" + strings.Repeat("é", MaxFieldBytes) // 2 bytes each
	l.Log(&Entry{Path: long})
	got := lines(t, out.Bytes())[0]["path"].(string)
	if len(got) > MaxFieldBytes+3 || !strings.HasSuffix(got, "é...") || !strings.HasPrefix(long, strings.TrimSuffix(got, "...")) {
		t.Errorf("cut to %d bytes: ...%q", len(got), got[len(got)-10:])
	}
}

func TestOffAndLiveSwitch(t *testing.T) {
	var out bytes.Buffer
	l := New(Config{Output: &out})
	if l.Enabled() {
		t.Fatal("a new Logger is on")
	}
	l.Log(fullEntry())
	if out.Len() != 0 {
		t.Fatal("logged while off")
	}
	on := accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"status"}})
	if err := l.Apply(on); err != nil || !l.Enabled() {
		t.Fatalf("Apply: %v", err)
	}
	l.Log(fullEntry())
	changed := proto.Clone(on.Spec).(*meshv1.AccessLogSpec)
	changed.Fields = []string{"method"}
	if err := l.Apply(accessLog(changed)); err != nil {
		t.Fatal(err)
	}
	l.Log(fullEntry())
	disabled := proto.Clone(on.Spec).(*meshv1.AccessLogSpec)
	disabled.Enabled = false
	if err := l.Apply(accessLog(disabled)); err != nil || l.Enabled() {
		t.Fatalf("disable: %v", err)
	}
	l.Log(fullEntry())
	if err := l.Apply(on); err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(nil); err != nil || l.Enabled() {
		t.Fatal("Apply(nil) left it on")
	}
	l.Log(fullEntry())
	if out.String() != "{\"status\":201}\n{\"method\":\"POST\"}\n" {
		t.Errorf("output %q", out.String())
	}
}

func TestApplyInvalid(t *testing.T) {
	l := New(Config{Output: &bytes.Buffer{}})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true})); err != nil {
		t.Fatal(err)
	}
	bad := accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"password"}})
	err := l.Apply(bad)
	if !errors.Is(err, ErrInvalidSpec) || !errors.Is(err, api.ErrInvalid) || !strings.HasPrefix(err.Error(), "accesslog: ") {
		t.Fatalf("Apply(bad) = %v", err)
	}
	if !l.Enabled() {
		t.Error("a refused Apply switched the log off; it must keep the last good one")
	}
}

func TestSampling(t *testing.T) {
	for _, tt := range []struct {
		ratio    float64
		lo, hi   int
		explicit bool
	}{
		{1, 4000, 4000, true}, {0, 0, 0, true}, {0.25, 800, 1200, true}, {0, 4000, 4000, false},
	} {
		var out bytes.Buffer
		l := New(Config{Output: &out})
		spec := &meshv1.AccessLogSpec{Enabled: true, Fields: []string{"status"}}
		if tt.explicit {
			spec.SampleRatio = proto.Float64(tt.ratio)
		}
		if err := l.Apply(accessLog(spec)); err != nil {
			t.Fatal(err)
		}
		for range 4000 {
			l.Log(fullEntry())
		}
		// 0.25 of 4000: 1000 ± 27 (one standard deviation); allow ± 200.
		if n := bytes.Count(out.Bytes(), []byte("\n")); n < tt.lo || n > tt.hi {
			t.Errorf("ratio %v (set %v): %d of 4000 logged", tt.ratio, tt.explicit, n)
		}
	}
}

func TestTTL(t *testing.T) {
	clock := newClock()
	var out, logs bytes.Buffer
	l := New(Config{Output: &out, Clock: clock, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	o := accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"status"}, Ttl: durationpb.New(10 * time.Minute)})
	o.UpdateTime = clock.Now().Add(-time.Minute) // written a minute ago
	if err := l.Apply(o); err != nil {
		t.Fatal(err)
	}
	l.Log(fullEntry())
	clock.Add(9*time.Minute - time.Nanosecond)
	if !l.Enabled() {
		t.Fatal("off before its TTL")
	}
	l.Log(fullEntry())
	clock.Add(time.Nanosecond)
	if l.Enabled() {
		t.Fatal("still on after its TTL")
	}
	l.Log(fullEntry())
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != 2 {
		t.Errorf("%d lines, want 2", n)
	}
	if !strings.Contains(logs.String(), "TTL ended") || strings.Count(logs.String(), "TTL ended") != 1 {
		t.Errorf("log: %q", logs.String())
	}
	// Off for good: time going on changes nothing, a re-apply of the same
	// object is still expired, a newer write starts again.
	clock.Add(time.Hour)
	if err := l.Apply(o); err != nil || l.Enabled() {
		t.Fatalf("re-applied an expired AccessLog: %v", err)
	}
	o.UpdateTime = clock.Now()
	if err := l.Apply(o); err != nil || !l.Enabled() {
		t.Fatalf("a new write did not switch it on: %v", err)
	}
	// Without an UpdateTime the TTL counts from Apply.
	o.UpdateTime = time.Time{}
	if err := l.Apply(o); err != nil {
		t.Fatal(err)
	}
	clock.Add(10*time.Minute - time.Nanosecond)
	if !l.Enabled() {
		t.Fatal("TTL from Apply ended early")
	}
	clock.Add(time.Nanosecond)
	if l.Enabled() {
		t.Fatal("TTL from Apply did not end")
	}
}

func TestTimeDefaultsToNow(t *testing.T) {
	clock := newClock()
	var out bytes.Buffer
	l := New(Config{Output: &out, Clock: clock})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"time"}})); err != nil {
		t.Fatal(err)
	}
	e := &Entry{}
	l.Log(e)
	if out.String() != "{\"time\":\"2030-01-02T03:04:05.678Z\"}\n" || !e.Time.IsZero() {
		t.Errorf("%q; entry changed: %v", out.String(), e.Time)
	}
}

func TestOpenFileAppends0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	if err := os.WriteFile(path, []byte("{\"earlier\":1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		f, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		l := New(Config{Output: f})
		if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"status"}})); err != nil {
			t.Fatal(err)
		}
		e := fullEntry()
		e.Status = 200 + i
		l.Log(e)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if string(data) != "{\"earlier\":1}\n{\"status\":200}\n{\"status\":201}\n" {
		t.Errorf("file: %q", data)
	}
	fresh := filepath.Join(t.TempDir(), "new.log")
	f, err := OpenFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, _ := os.Stat(fresh); st.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v", st.Mode().Perm())
	}
	if _, err := OpenFile(filepath.Join(t.TempDir(), "missing", "x.log")); err == nil || !strings.HasPrefix(err.Error(), "accesslog: ") {
		t.Errorf("OpenFile in a missing dir: %v", err)
	}
}

func TestWriteErrorsCounted(t *testing.T) {
	f, err := OpenFile(filepath.Join(t.TempDir(), "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close() // every write now fails
	clock := newClock()
	var logs bytes.Buffer
	l := New(Config{Output: f, Clock: clock, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true})); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.Log(fullEntry())
	}
	clock.Add(time.Minute)
	l.Log(fullEntry())
	if l.Dropped() != 6 {
		t.Errorf("dropped %d, want 6", l.Dropped())
	}
	if n := strings.Count(logs.String(), "access log write failed"); n != 2 {
		t.Errorf("%d warnings, want 2 (one a minute):\n%s", n, logs.String())
	}
}

func TestConcurrentLogAndApply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := New(Config{Output: f})
	specs := []*api.AccessLog{
		accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"path", "status"}}),
		accessLog(&meshv1.AccessLogSpec{Enabled: true}),
		accessLog(&meshv1.AccessLogSpec{Enabled: false}),
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				if g == 0 && i%50 == 0 {
					if err := l.Apply(specs[(i/50)%len(specs)]); err != nil {
						t.Error(err)
					}
				}
				e := fullEntry()
				e.Path = strings.Repeat("/p", i%40)
				l.Log(e)
			}
		}()
	}
	wg.Wait()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := lines(t, data); len(got) == 0 {
		t.Error("nothing logged")
	}
}

func TestLogDoesNotAllocate(t *testing.T) {
	l := New(Config{Output: io.Discard})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: api.AccessLogFields()})); err != nil {
		t.Fatal(err)
	}
	e := fullEntry()
	e.Path = "/with\nnewline\x1b"
	if n := testing.AllocsPerRun(1000, func() { l.Log(e) }); n != 0 {
		t.Errorf("Log: %v allocations", n)
	}
	e.Time = time.Time{}
	if n := testing.AllocsPerRun(1000, func() { l.Log(e) }); n != 0 {
		t.Errorf("Log without a time: %v allocations", n)
	}
}

// fakeClock is the shared test clock (certstest.Clock); Add moves it.
type fakeClock = certstest.Clock

func newClock() *fakeClock {
	return certstest.NewClock(time.Date(2030, 1, 2, 3, 4, 5, 678_000_000, time.UTC))
}
