package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"minimesh/internal/daemon"
	"minimesh/internal/testlog"
)

func lines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestLogFlags: --log-format json|text and --log-level; durations are
// strings in both formats; another format is refused naming the flag.
func TestLogFlags(t *testing.T) {
	parse := func(args ...string) (*daemon.LogFlags, error) {
		var lf daemon.LogFlags
		fs := pflag.NewFlagSet("d", pflag.ContinueOnError)
		fs.SetOutput(&strings.Builder{})
		lf.Register(fs)
		return &lf, fs.Parse(args)
	}
	lf, err := parse()
	if err != nil || lf.Format.String() != "json" || lf.Level != slog.LevelInfo {
		t.Fatalf("defaults: %v %v %v, want json info", lf.Format, lf.Level, err)
	}
	var buf testlog.Buffer
	lf.Logger(&buf).Debug("hidden")
	lf.Logger(&buf).Info("took", "elapsed", 1500*time.Millisecond, "nested", slog.GroupValue(slog.Duration("d", 250*time.Millisecond)))
	got := lines(t, buf.String())
	if len(got) != 1 || got[0]["elapsed"] != "1.5s" || got[0]["nested"].(map[string]any)["d"] != "250ms" {
		t.Errorf("JSON line %v: want one line, durations as strings 1.5s and 250ms", got)
	}

	lf, err = parse("--log-format", "text", "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	var text testlog.Buffer
	lf.Logger(&text).Debug("took", "elapsed", 1500*time.Millisecond)
	if s := text.String(); !strings.Contains(s, "level=DEBUG") || !strings.Contains(s, "elapsed=1.5s") {
		t.Errorf("text line %q: want key=value at debug with elapsed=1.5s", s)
	}

	if _, err := parse("--log-format", "yaml"); err == nil || !strings.Contains(err.Error(), "--log-format") || !strings.Contains(err.Error(), "json or text") {
		t.Errorf("--log-format yaml: %v, want an error naming the flag and the choices", err)
	}
}

// TestCheckUnique: a key given to With and again in the call, or twice in
// one call, is reported; the same name in another group is not.
func TestCheckUnique(t *testing.T) {
	var dups []string
	var buf testlog.Buffer
	log := slog.New(daemon.CheckUnique(slog.NewJSONHandler(&buf, nil), func(msg, key string) { dups = append(dups, msg+":"+key) }))

	log.With("service", "web").Info("a", "listener", "inbound", "port", 1)
	log.With("g", 1).WithGroup("h").Info("b", "g", 2, slog.Group("x", "service", 1), "service", 2)
	if len(dups) != 0 {
		t.Fatalf("reported %v for lines without a repeated key", dups)
	}
	log.With("service", "web").Info("c", "service", "api")
	log.With("listener", "outbound").With("listener", "outbound").Info("d")
	log.Info("e", "k", 1, "k", 2)
	log.WithGroup("g").Info("f", slog.Group("", "a", 1), "a", 2)
	want := []string{"c:service", "d:listener", "e:k", "f:g.a"}
	if strings.Join(dups, ",") != strings.Join(want, ",") {
		t.Errorf("reported %v, want %v", dups, want)
	}
}

// TestRunUntil: one line when shutdown starts (and why), one when it has
// ended (how long it took, as a string); a run that fails is logged as
// one JSON line and comes back as ErrLogged.
func TestRunUntil(t *testing.T) {
	var buf testlog.Buffer
	log := daemon.NewLogger(&buf, daemon.FormatJSON, slog.LevelInfo)
	ctx, cancel := context.WithCancelCause(context.Background())
	ran := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- daemon.RunUntil(ctx, log, "meshd", func(ctx context.Context) error {
			close(ran)
			<-ctx.Done()
			return nil
		})
	}()
	<-ran
	cancel(errors.New("terminated signal received"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := lines(t, buf.String())
	if len(got) != 2 || got[0]["msg"] != "meshd shutting down" || got[0]["reason"] != "terminated signal received" ||
		got[1]["msg"] != "meshd stopped" {
		t.Fatalf("lines %v: want shutting down (reason) then stopped", got)
	}
	if took, ok := got[1]["took"].(string); !ok || !strings.HasSuffix(took, "s") {
		t.Errorf("took %v: want a duration string", got[1]["took"])
	}

	buf = testlog.Buffer{}
	err := daemon.RunUntil(context.Background(), log, "mesh-proxy", func(context.Context) error { return errors.New("listen: address in use") })
	if !errors.Is(err, daemon.ErrLogged) {
		t.Errorf("a failed run: %v, want ErrLogged", err)
	}
	got = lines(t, buf.String())
	if len(got) != 1 || got[0]["level"] != "ERROR" || got[0]["msg"] != "mesh-proxy failed" || got[0]["error"] != "listen: address in use" {
		t.Errorf("lines %v: want one JSON error line naming the failure", got)
	}
}

// TestDuplicateKeys finds a key twice in one JSON line, at any depth.
func TestDuplicateKeys(t *testing.T) {
	for line, want := range map[string]string{
		`{"a":1,"b":{"a":2},"c":[{"a":1}]}`:                 "",
		`{"service":"web","listener":"in","service":"api"}`: "service",
		`{"g":{"k":1,"k":[1,{"x":1}]},"h":2}`:               "g.k",
	} {
		got, err := daemon.DuplicateKeys([]byte(line))
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("%s: %v %v, want %q", line, got, err, want)
		}
	}
	if _, err := daemon.DuplicateKeys([]byte("level=INFO msg=x")); err == nil {
		t.Error("a text line: no error")
	}
}
