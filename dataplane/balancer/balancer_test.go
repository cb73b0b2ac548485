package balancer

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"minimesh/certs/certstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func targets(n int) []Target {
	ts := make([]Target, n)
	for i := range ts {
		ts[i] = Target{Addr: fmt.Sprintf("10.0.0.%d:15006", i+1), Identity: "spiffe://minimesh.local/ns/prod/sa/api"}
	}
	return ts
}

func newBalancer(t *testing.T, cfg Config, n int) (*Balancer, *fakeClock) {
	t.Helper()
	clock := newClock()
	if cfg.Clock == nil {
		cfg.Clock = clock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.SetTargets(targets(n))
	return b, clock
}

func endpoint(t *testing.T, b *Balancer, addr string) *Endpoint {
	t.Helper()
	for _, e := range b.state.Load().all {
		if e.Addr == addr {
			return e
		}
	}
	t.Fatalf("no endpoint %s", addr)
	return nil
}

// picks counts, over n picks each finished at once, who got them.
func picks(t *testing.T, b *Balancer, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		e, err := b.Pick()
		if err != nil {
			t.Fatal(err)
		}
		got[e.Addr]++
		b.Done(e, true)
	}
	return got
}

func status(b *Balancer, addr string) Status {
	for _, s := range b.Status() {
		if s.Addr == addr {
			return s
		}
	}
	return Status{}
}

func TestP2CPrefersLessLoaded(t *testing.T) {
	b, _ := newBalancer(t, Config{}, 2)
	a, c := "10.0.0.1:15006", "10.0.0.2:15006"
	endpoint(t, b, a).outstanding.Add(1)
	if got := picks(t, b, 200); got[a] != 0 || got[c] != 200 {
		t.Errorf("two endpoints, one busy: %v", got)
	}

	// With three, the busiest loses every pair it is drawn into.
	b, _ = newBalancer(t, Config{}, 3)
	endpoint(t, b, a).outstanding.Add(10)
	endpoint(t, b, c).outstanding.Add(5)
	got := picks(t, b, 1000)
	if got[a] != 0 || got[c] == 0 || got["10.0.0.3:15006"] == 0 {
		t.Errorf("three endpoints loaded 10/5/0: %v", got)
	}
}

func TestP2CSpreadsEvenLoad(t *testing.T) {
	b, _ := newBalancer(t, Config{}, 4)
	for addr, n := range picks(t, b, 4000) {
		// 1000 expected each; P2C with equal loads draws uniformly.
		if n < 700 || n > 1300 {
			t.Errorf("%s got %d of 4000", addr, n)
		}
	}
	// Requests held open spread across endpoints: least outstanding.
	var held []*Endpoint
	for range 40 {
		e, err := b.Pick()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, e)
	}
	for _, s := range b.Status() {
		if s.Outstanding < 5 || s.Outstanding > 15 {
			t.Errorf("%s has %d of 40 held requests", s.Addr, s.Outstanding)
		}
	}
	for _, e := range held {
		b.Done(e, true)
	}
	for _, s := range b.Status() {
		if s.Outstanding != 0 {
			t.Errorf("%s: %d outstanding after Done", s.Addr, s.Outstanding)
		}
	}
}

func TestEjectionAndReturn(t *testing.T) {
	var logs bytes.Buffer
	b, clock := newBalancer(t, Config{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second, MaxEjection: 25 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, 4)
	bad := endpoint(t, b, "10.0.0.1:15006")
	fail := func(n int) {
		for range n {
			bad.outstanding.Add(1) // as Pick would
			b.Done(bad, false)
		}
	}

	// Failures broken by a success do not eject.
	fail(2)
	bad.outstanding.Add(1)
	b.Done(bad, true)
	fail(2)
	if status(b, bad.Addr).Ejected {
		t.Fatal("ejected without 3 failures in a row")
	}

	fail(1)
	st := status(b, bad.Addr)
	if !st.Ejected || st.Ejections != 1 || !st.EjectedUntil.Equal(clock.Now().Add(10*time.Second)) {
		t.Fatalf("after 3 failures: %+v", st)
	}
	if got := picks(t, b, 300); got[bad.Addr] != 0 {
		t.Fatalf("ejected endpoint picked %d times", got[bad.Addr])
	}
	clock.Add(10*time.Second - time.Nanosecond)
	if got := picks(t, b, 300); got[bad.Addr] != 0 {
		t.Fatal("returned before its time")
	}
	clock.Add(time.Nanosecond)
	if got := picks(t, b, 300); got[bad.Addr] == 0 {
		t.Fatal("not returned after its ejection time")
	}
	if st := status(b, bad.Addr); st.Ejected || st.ConsecutiveFailures != 0 {
		t.Fatalf("returned: %+v", st)
	}
	for _, want := range []string{`msg="endpoint ejected" addr=10.0.0.1:15006`, "for=10s", `msg="endpoint returned after ejection" addr=10.0.0.1:15006`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	// The second ejection lasts twice as long, the third is capped.
	for i, want := range []time.Duration{20 * time.Second, 25 * time.Second, 25 * time.Second} {
		fail(3)
		st := status(b, bad.Addr)
		if !st.Ejected || st.Ejections != i+2 || st.EjectedUntil.Sub(clock.Now()) != want {
			t.Fatalf("ejection %d: %+v, want %v", i+2, st, want)
		}
		clock.Add(want)
		picks(t, b, 1)
	}

	// Healthy for longer than MaxEjection: the count starts over.
	clock.Add(26 * time.Second)
	fail(3)
	if st := status(b, bad.Addr); st.Ejections != 1 || st.EjectedUntil.Sub(clock.Now()) != 10*time.Second {
		t.Fatalf("after a long healthy period: %+v", st)
	}
}

func TestNeverMoreThanHalfEjected(t *testing.T) {
	for _, tt := range []struct {
		endpoints, percent, maxOut int
	}{
		{1, 0, 0}, {2, 0, 1}, {3, 0, 1}, {4, 0, 2}, {5, 0, 2}, {10, 0, 5}, {10, 20, 2}, {4, 10, 0},
	} {
		t.Run(fmt.Sprintf("%d endpoints %d%%", tt.endpoints, tt.percent), func(t *testing.T) {
			b, _ := newBalancer(t, Config{ConsecutiveFailures: 2, MaxEjectedPercent: tt.percent}, tt.endpoints)
			// Everything fails, many times over.
			for range 20 {
				for _, e := range b.state.Load().all {
					e.outstanding.Add(1)
					b.Done(e, false)
				}
			}
			out := 0
			for _, s := range b.Status() {
				if s.Ejected {
					out++
				}
			}
			if out != tt.maxOut {
				t.Fatalf("%d ejected, want %d", out, tt.maxOut)
			}
			// Enough picks that every live endpoint is chosen (a power-of-two
			// choice over equal loads is random): 8 live of 10 missed one in 50.
			if got := picks(t, b, 2000); len(got) != tt.endpoints-tt.maxOut {
				t.Fatalf("picks went to %d endpoints, want %d", len(got), tt.endpoints-tt.maxOut)
			}
		})
	}
}

func TestSetTargetsKeepsState(t *testing.T) {
	b, clock := newBalancer(t, Config{ConsecutiveFailures: 1}, 3)
	bad := endpoint(t, b, "10.0.0.1:15006")
	bad.outstanding.Add(1)
	b.Done(bad, false)
	busy := endpoint(t, b, "10.0.0.2:15006")
	busy.outstanding.Add(7)

	ts := append(targets(3), Target{Addr: "10.0.0.9:15006"}, targets(1)[0])
	b.SetTargets(ts)
	if st := status(b, bad.Addr); !st.Ejected {
		t.Error("an update returned an ejected endpoint")
	}
	if st := status(b, busy.Addr); st.Outstanding != 7 {
		t.Errorf("outstanding lost: %+v", st)
	}
	if n := len(b.Status()); n != 4 {
		t.Errorf("%d endpoints, want 4 (duplicates dropped)", n)
	}

	// A new identity at the same address is a new endpoint.
	ts[1].Identity = "spiffe://minimesh.local/ns/prod/sa/other"
	b.SetTargets(ts)
	if st := status(b, busy.Addr); st.Outstanding != 0 || st.Identity != ts[1].Identity {
		t.Errorf("identity change kept state: %+v", st)
	}
	// Done on an endpoint that was removed is harmless.
	b.SetTargets(nil)
	busy.outstanding.Add(1)
	b.Done(busy, false)
	if _, err := b.Pick(); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("Pick with no endpoints: %v", err)
	}
	clock.Add(time.Hour)
	if len(b.Status()) != 0 {
		t.Error("endpoints after SetTargets(nil)")
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{
		{ConsecutiveFailures: -1},
		{BaseEjection: -time.Second},
		{BaseEjection: time.Minute, MaxEjection: time.Second},
		{MaxEjectedPercent: 51},
		{MaxEjectedPercent: -1},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
	b, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if b.cfg.ConsecutiveFailures != DefaultConsecutiveFailures || b.cfg.BaseEjection != DefaultBaseEjection ||
		b.cfg.MaxEjection != DefaultMaxEjection || b.cfg.MaxEjectedPercent != DefaultMaxEjectedPercent || b.cfg.Clock == nil || b.cfg.Logger == nil {
		t.Errorf("defaults: %+v", b.cfg)
	}
	if _, err := b.Pick(); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("Pick on a new balancer: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	b, clock := newBalancer(t, Config{ConsecutiveFailures: 3, BaseEjection: time.Second}, 6)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				e, err := b.Pick()
				if err != nil {
					t.Error(err)
					return
				}
				// Endpoint 1 always fails, the others rarely.
				b.Done(e, e.Addr != "10.0.0.1:15006" && rand.IntN(20) != 0)
				if g == 0 && i%100 == 0 {
					clock.Add(300 * time.Millisecond)
				}
				if g == 1 && i%500 == 0 {
					b.SetTargets(targets(6))
				}
			}
		}()
	}
	wg.Wait()
	out := 0
	for _, s := range b.Status() {
		if s.Outstanding != 0 {
			t.Errorf("%s: %d outstanding", s.Addr, s.Outstanding)
		}
		if s.Ejected {
			out++
		}
	}
	if out > 3 {
		t.Errorf("%d of 6 ejected", out)
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	b, _ := newBalancer(t, Config{}, 8)
	if n := testing.AllocsPerRun(1000, func() {
		e, _ := b.Pick()
		b.Done(e, true)
	}); n != 0 {
		t.Errorf("Pick+Done: %v allocations", n)
	}
}

// fakeClock is the shared test clock (certstest.Clock); Add moves it.
type fakeClock = certstest.Clock

func newClock() *fakeClock { return certstest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) }
