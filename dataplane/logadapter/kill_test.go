package logadapter

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// TestHelperAdapterProcess is the adapter as a process of its own (run by
// TestSIGKILLLosesNothing): records to stdout through an Output, offsets
// in $LOGADAPTER_STATE, until SIGTERM.
func TestHelperAdapterProcess(t *testing.T) {
	if os.Getenv("LOGADAPTER_HELPER") != "1" {
		t.Skip("run by TestSIGKILLLosesNothing")
	}
	out, err := NewOutput(OutputConfig{Writer: os.Stdout})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := Compile(&api.LogAdapter{Metadata: api.Metadata{Name: "k", Namespace: "default"}, Spec: &meshv1.LogAdapterSpec{
		Service: "api", Files: []string{"logs/*.log"}, FlushAfter: durationpb.New(50 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{SharedDir: os.Getenv("LOGADAPTER_SHARED"), StateDir: os.Getenv("LOGADAPTER_STATE"), Sink: out,
		Progress: []func() (uint64, uint64){out.Progress}, Poll: 5 * time.Millisecond, PersistEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a.Set([]*Spec{sp})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	outCtx, outStop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- out.Run(outCtx) }()
	_ = a.Run(ctx)
	outStop()
	<-done
	os.Exit(0)
}

// TestSIGKILLLosesNothing: the adapter as a real process is SIGKILLed
// while the app writes; the next one repeats only the tail the first had
// written since its last persist (same record IDs, in order) and loses
// nothing; a SIGTERM then repeats nothing.
func TestSIGKILLLosesNothing(t *testing.T) {
	shared, state := sharedDir(t), t.TempDir()
	logFile := filepath.Join(shared, "logs/app.log")
	type proc struct {
		cmd  *exec.Cmd
		ids  []string
		mu   sync.Mutex
		done chan struct{}
	}
	startProc := func() *proc {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAdapterProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), "LOGADAPTER_HELPER=1", "LOGADAPTER_SHARED="+shared, "LOGADAPTER_STATE="+state)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &proc{cmd: cmd, done: make(chan struct{})}
		go func() {
			defer close(p.done)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var r struct {
					ID  string `json:"record_id"`
					Msg string `json:"message"`
				}
				if json.Unmarshal(sc.Bytes(), &r) == nil && r.ID != "" {
					p.mu.Lock()
					p.ids = append(p.ids, r.Msg)
					p.mu.Unlock()
				}
			}
			_, _ = io.Copy(io.Discard, stdout)
		}()
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return p
	}
	seen := func(p *proc) []string {
		p.mu.Lock()
		defer p.mu.Unlock()
		return append([]string(nil), p.ids...)
	}
	const total = 3000
	written := 0
	writeSome := func(n int) {
		for range n {
			appendFile(t, logFile, fmt.Sprintf("line %d\n", written))
			written++
		}
	}
	first := startProc()
	writeSome(1000)
	waitFor(t, "the first process's records", func() bool { return len(seen(first)) >= 800 })
	writeSome(500) // being read when the kill comes
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	_ = first.cmd.Wait()
	second := startProc()
	writeSome(total - written)
	waitFor(t, "every record", func() bool {
		s := seen(second)
		return len(s) > 0 && s[len(s)-1] == fmt.Sprintf("line %d", total-1)
	})
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-second.done
	_ = second.cmd.Wait()
	a, b := seen(first), seen(second)
	// b starts with a repeat of a's tail, then goes on in order.
	k := 0
	if len(b) > 0 {
		for i, m := range a {
			if m == b[0] {
				k = len(a) - i
				break
			}
		}
	}
	all := append(append([]string(nil), a...), b[k:]...)
	if len(all) != total {
		t.Fatalf("%d distinct records (first %d, second %d, repeated %d), want %d", len(all), len(a), len(b), k, total)
	}
	for i, m := range all {
		if m != fmt.Sprintf("line %d", i) {
			t.Fatalf("record %d is %q: lost or out of order", i, m)
		}
	}
	for i := range k {
		if b[i] != a[len(a)-k+i] {
			t.Fatalf("the repeat is not the first process's tail: %q vs %q", b[i], a[len(a)-k+i])
		}
	}
	t.Logf("first process wrote %d records before SIGKILL, the second repeated %d of them", len(a), k)

	// A SIGTERM leaves nothing to repeat.
	third := startProc()
	writeSome(1)
	waitFor(t, "the next record", func() bool { return len(seen(third)) >= 1 })
	_ = third.cmd.Process.Signal(syscall.SIGTERM)
	<-third.done
	_ = third.cmd.Wait()
	if got := seen(third); strings.Join(got, ",") != fmt.Sprintf("line %d", total) {
		t.Errorf("after a SIGTERM the next run emitted %q, want only the new line", got)
	}
}
