package ratelimit

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"minimesh/api"
	"minimesh/certs/certstest"
	meshv1 "minimesh/proto/mesh/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	web   = "spiffe://minimesh.local/ns/prod/sa/web"
	batch = "spiffe://minimesh.local/ns/prod/sa/batch"
	ops   = "spiffe://minimesh.local/ns/ops/sa/probe"
)

func limit(name, route string, rps float64, burst uint32, perSource bool, overrides ...*meshv1.RateLimitOverride) *api.RateLimit {
	return &api.RateLimit{
		Metadata: api.Metadata{Name: name, Namespace: "prod"},
		Spec: &meshv1.RateLimitSpec{Service: "api", Route: route, RequestsPerSecond: rps, Burst: burst,
			PerSourceIdentity: perSource, Overrides: overrides},
	}
}

func ov(identity string, rps float64, burst uint32) *meshv1.RateLimitOverride {
	return &meshv1.RateLimitOverride{Identity: identity, RequestsPerSecond: rps, Burst: burst}
}

func compile(t *testing.T, cfg Config, limits ...*api.RateLimit) (*Limiter, *fakeClock) {
	t.Helper()
	clock := newClock()
	cfg.Clock = clock
	l, err := Compile(cfg, limits)
	if err != nil {
		t.Fatal(err)
	}
	return l, clock
}

// take makes n requests and returns how many were allowed.
func take(l *Limiter, route, id string, n int) int {
	ok := 0
	for range n {
		if l.Allow(route, id).Allowed {
			ok++
		}
	}
	return ok
}

func TestSharedBucket(t *testing.T) {
	l, clock := compile(t, Config{}, limit("total", "", 1, 3, false))
	for i, want := range []int{2, 1, 0} {
		r := l.Allow("", []string{web, batch, ops}[i])
		if !r.Allowed || r.Remaining != want || r.Limit != 3 || r.Policy != "prod/total" || r.RetryAfter != 0 {
			t.Fatalf("request %d: %+v", i+1, r)
		}
	}
	r := l.Allow("", web)
	if r.Allowed || r.Remaining != 0 || r.RetryAfter != time.Second || r.Reset != 3*time.Second {
		t.Fatalf("4th request: %+v", r)
	}
	clock.Add(time.Second)
	if got := take(l, "", batch, 5); got != 1 {
		t.Fatalf("%d allowed a second later, want 1", got)
	}
	if l.Identities() != 0 {
		t.Errorf("a shared bucket keeps %d identities", l.Identities())
	}
}

func TestResultTimes(t *testing.T) {
	l, clock := compile(t, Config{}, limit("r", "", 2, 4, false))
	r := l.Allow("", web)
	if r.Remaining != 3 || r.Reset != 500*time.Millisecond {
		t.Errorf("after one of 4 at 2/s: %+v", r)
	}
	take(l, "", web, 3)
	clock.Add(250 * time.Millisecond) // half a token back
	r = l.Allow("", web)
	if r.Allowed || r.RetryAfter != 250*time.Millisecond || r.Reset != 1750*time.Millisecond {
		t.Errorf("empty, half a token back: %+v", r)
	}
	// Defaults: burst 0 is the rate rounded up.
	l, _ = compile(t, Config{}, limit("r", "", 2.5, 0, false))
	if r := l.Allow("", web); r.Limit != 3 || r.Remaining != 2 {
		t.Errorf("burst 0 at 2.5/s: %+v", r)
	}
}

func TestPerSourceIdentity(t *testing.T) {
	l, clock := compile(t, Config{}, limit("each", "", 1, 2, true))
	for _, id := range []string{web, batch, ops} {
		if got := take(l, "", id, 5); got != 2 {
			t.Errorf("%s: %d allowed, want its own 2", id, got)
		}
	}
	if n := l.Identities(); n != 3 {
		t.Errorf("%d identities held, want 3", n)
	}
	clock.Add(time.Second)
	if take(l, "", web, 5) != 1 || take(l, "", batch, 5) != 1 {
		t.Error("buckets did not refill one per second")
	}
}

func TestOverrides(t *testing.T) {
	l, _ := compile(t, Config{}, limit("total", "", 1, 2, false,
		ov(web, 10, 10),
		ov("spiffe://minimesh.local/ns/ops/**", 1, 5),
		ov("spiffe://minimesh.local/ns/ops/sa/probe", 100, 100), // shadowed: the glob comes first
	))
	if got := take(l, "", web, 20); got != 10 {
		t.Errorf("web (exact override): %d allowed, want 10", got)
	}
	if got := take(l, "", ops, 20); got != 5 {
		t.Errorf("ops (glob override first): %d allowed, want 5", got)
	}
	other := "spiffe://minimesh.local/ns/ops/sa/other"
	if got := take(l, "", other, 20); got != 5 {
		t.Errorf("another ops identity gets its own bucket: %d allowed, want 5", got)
	}
	// Everyone else shares the 2.
	if got := take(l, "", batch, 1) + take(l, "", "spiffe://minimesh.local/ns/dev/sa/x", 5); got != 2 {
		t.Errorf("shared: %d allowed, want 2", got)
	}
	if r := l.Allow("", web); r.Limit != 10 {
		t.Errorf("override's limit not reported: %+v", r)
	}

	// Overrides apply with per-source buckets too.
	l, _ = compile(t, Config{}, limit("each", "", 1, 2, true, ov(web, 1, 7)))
	if take(l, "", web, 10) != 7 || take(l, "", batch, 10) != 2 || take(l, "", ops, 10) != 2 {
		t.Error("per source with an override")
	}
}

func TestRoutes(t *testing.T) {
	l, _ := compile(t, Config{},
		limit("api-writes", "writes", 1, 2, false),
		limit("api-all", "", 1, 5, false),
	)
	// The route's own limit applies first.
	if got := take(l, "writes", web, 4); got != 2 {
		t.Fatalf("writes: %d allowed, want 2", got)
	}
	r := l.Allow("writes", web)
	if r.Allowed || r.Policy != "prod/api-writes" {
		t.Fatalf("refused by %+v", r)
	}
	// The service-wide bucket took the 2 writes (and not the refused ones).
	if got := take(l, "reads", web, 10); got != 3 {
		t.Fatalf("another route: %d allowed, want 3 left of 5", got)
	}
	if r := l.Allow("", web); r.Allowed || r.Policy != "prod/api-all" {
		t.Fatalf("no route: %+v", r)
	}

	// An allowed request reports the bucket closest to refusing it.
	l, _ = compile(t, Config{}, limit("a-route", "r", 1, 10, false), limit("b-all", "", 1, 3, false))
	if r := l.Allow("r", web); !r.Allowed || r.Policy != "prod/b-all" || r.Remaining != 2 {
		t.Fatalf("tightest: %+v", r)
	}
	// A route without RateLimits gets only the service's.
	l, _ = compile(t, Config{}, limit("only-route", "r", 1, 1, false))
	if r := l.Allow("other", web); !r.Allowed || r.Policy != "" {
		t.Fatalf("unlimited route: %+v", r)
	}
}

func TestNilAndEmpty(t *testing.T) {
	var l *Limiter
	if r := l.Allow("r", web); !r.Allowed || r.Policy != "" || l.Identities() != 0 || l.Service() != "" {
		t.Error("nil limiter")
	}
	e, _ := compile(t, Config{})
	if r := e.Allow("", web); !r.Allowed {
		t.Error("empty limiter refused")
	}
}

func TestCompileErrors(t *testing.T) {
	other := limit("o", "", 1, 1, false)
	other.Spec.Service = "web"
	tests := []struct {
		name   string
		cfg    Config
		limits []*api.RateLimit
		err    error
	}{
		{"nil", Config{}, []*api.RateLimit{nil}, ErrInvalidLimit},
		{"zero rate", Config{}, []*api.RateLimit{limit("r", "", 0, 1, false)}, api.ErrInvalid},
		{"bad override", Config{}, []*api.RateLimit{limit("r", "", 1, 1, false, ov("web", 1, 1))}, api.ErrInvalid},
		{"mixed services", Config{}, []*api.RateLimit{limit("r", "", 1, 1, false), other}, ErrMixedServices},
		{"bad config", Config{MaxIdentities: -1}, nil, ErrInvalidConfig},
	}
	for _, tt := range tests {
		l, err := Compile(tt.cfg, tt.limits)
		if !errors.Is(err, tt.err) || l != nil {
			t.Errorf("%s: Compile = %v, %v; want %v", tt.name, l, err, tt.err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "ratelimit: ") {
			t.Errorf("%s: %q lacks the prefix", tt.name, err)
		}
	}
}

// TestFloodOfIdentitiesStaysBounded sends one request from each of a
// million distinct identities: the buckets held never exceed the cap.
func TestFloodOfIdentitiesStaysBounded(t *testing.T) {
	const capacity = 10000
	for _, tt := range []struct {
		name  string
		flood int
		limit *api.RateLimit
	}{
		{"per source", 1_000_000, limit("each", "", 1, 1, true)},
		// Identities without an override share one bucket, but each is
		// remembered so that overrides are matched once: bounded too.
		{"shared with overrides", 100_000, limit("total", "", 1e6, 1_000_000, false, ov("spiffe://minimesh.local/ns/other/**", 1, 1))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := compile(t, Config{MaxIdentities: capacity}, tt.limit)
			buf := []byte("spiffe://minimesh.local/ns/flood/sa/x")
			n := len(buf)
			for i := range tt.flood {
				buf = strconv.AppendInt(buf[:n], int64(i), 10)
				if r := l.Allow("", string(buf)); !r.Allowed {
					t.Fatalf("identity %d refused: %+v", i, r)
				}
				if i%50000 == 0 {
					if got := l.Identities(); got > capacity {
						t.Fatalf("after %d identities: %d held", i+1, got)
					}
				}
			}
			if got, c := l.Identities(), l.rules[0].buckets.capacity(); got != capacity || c != capacity {
				t.Errorf("%d buckets held (capacity %d), want %d", got, c, capacity)
			}
			if tt.limit.Spec.PerSourceIdentity {
				// The most recent identity is still known: its bucket is empty.
				if r := l.Allow("", string(buf)); r.Allowed {
					t.Errorf("the last identity's bucket was forgotten: %+v", r)
				}
			}
		})
	}
}

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	made := 0
	c := newBuckets(3, func(string) *bucket { made++; return &bucket{} })
	if len(c.shards) != 1 {
		t.Fatalf("%d shards for 3 entries", len(c.shards))
	}
	a := c.get("a")
	c.get("b")
	c.get("c")
	if c.get("a") != a { // a is now the most recent
		t.Fatal("a changed")
	}
	c.get("d") // evicts b
	if made != 4 || c.len() != 3 {
		t.Fatalf("made %d, holding %d", made, c.len())
	}
	c.get("a")
	c.get("c")
	c.get("d")
	if made != 4 {
		t.Fatalf("a, c or d was evicted (made %d)", made)
	}
	c.get("b")
	if made != 5 || c.len() != 3 {
		t.Fatalf("b was not evicted (made %d)", made)
	}
	// Sharded: the total stays within the capacity.
	big := newBuckets(10000, func(string) *bucket { return &bucket{} })
	if len(big.shards) != 16 || big.capacity() != 10000 {
		t.Errorf("%d shards, capacity %d", len(big.shards), big.capacity())
	}
}

func TestConcurrentSharedBucket(t *testing.T) {
	l, _ := compile(t, Config{MaxIdentities: 64}, limit("total", "", 1, 1000, false), limit("each", "", 1, 100, true))
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				if l.Allow("", "spiffe://minimesh.local/ns/prod/sa/s"+strconv.Itoa((g*500+i)%100)).Allowed {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// 4000 requests, a frozen clock: the shared bucket lets exactly 1000
	// through (the per-source buckets, 100 each, do not bind first).
	if got := allowed.Load(); got != 1000 {
		t.Errorf("%d allowed, want 1000", got)
	}
	if n := l.Identities(); n > 64 {
		t.Errorf("%d identities held, cap 64", n)
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l, _ := compile(t, Config{}, limit("each", "r", 1e6, 1_000_000, true), limit("total", "", 1e6, 1_000_000, false, ov(web, 1e6, 1_000_000)))
	for _, id := range []string{web, batch} {
		l.Allow("r", id) // create the buckets
		if n := testing.AllocsPerRun(1000, func() { l.Allow("r", id) }); n != 0 {
			t.Errorf("Allow(%s): %v allocations", id, n)
		}
	}
}

// Test429OverHTTP serves a limited handler on loopback and checks what a
// client receives.
func Test429OverHTTP(t *testing.T) {
	l, clock := compile(t, Config{}, limit("total", "", 0.5, 2, false))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res := l.Allow("", web)
		if !res.Allowed {
			WriteTooManyRequests(w, res)
			return
		}
		res.SetHeaders(w.Header())
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	get := func() *http.Response {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	want := func(resp *http.Response, status int, headers map[string]string) {
		t.Helper()
		if resp.StatusCode != status {
			t.Errorf("status %d, want %d", resp.StatusCode, status)
		}
		for k, v := range headers {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
	}
	want(get(), 200, map[string]string{"RateLimit-Limit": "2", "RateLimit-Remaining": "1", "RateLimit-Reset": "2", "RateLimit-Policy": "2;w=4", "Retry-After": ""})
	want(get(), 200, map[string]string{"RateLimit-Remaining": "0", "RateLimit-Reset": "4"})
	want(get(), 429, map[string]string{"Retry-After": "2", "RateLimit-Remaining": "0", "RateLimit-Reset": "4", "Content-Type": "text/plain; charset=utf-8"})
	clock.Add(1500 * time.Millisecond) // 0.75 of a token
	want(get(), 429, map[string]string{"Retry-After": "1", "RateLimit-Reset": "3"})
	clock.Add(500 * time.Millisecond)
	want(get(), 200, map[string]string{"RateLimit-Remaining": "0"})
	srv.Client().CloseIdleConnections()
}

func TestHeaderNamesAreCanonical(t *testing.T) {
	for _, h := range []string{HeaderLimit, HeaderRemaining, HeaderReset, HeaderPolicy, HeaderRetryAfter} {
		if http.CanonicalHeaderKey(h) != h {
			t.Errorf("%q is not canonical", h)
		}
	}
	h := http.Header{}
	Result{Allowed: true}.SetHeaders(h)
	if len(h) != 0 {
		t.Errorf("no policy, yet headers %v", h)
	}
}

// fakeClock is the shared test clock (certstest.Clock); Add moves it.
type fakeClock = certstest.Clock

func newClock() *fakeClock { return certstest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) }

// A RateLimit that a new Limiter keeps unchanged keeps its buckets (a
// change elsewhere does not refill them); a changed or new one starts full.
func TestPreviousKeepsUnchangedBuckets(t *testing.T) {
	clock := newClock()
	build := func(cfg Config, limits ...*api.RateLimit) *Limiter {
		t.Helper()
		cfg.Clock = clock
		l, err := Compile(cfg, limits)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := build(Config{}, limit("kept", "a", 0.001, 2, false), limit("changed", "b", 0.001, 2, false))
	if got, got2 := take(first, "a", web, 5), take(first, "b", web, 5); got != 2 || got2 != 2 {
		t.Fatalf("first: %d and %d allowed, want the bursts of 2", got, got2)
	}
	second := build(Config{Previous: first}, limit("kept", "a", 0.001, 2, false), limit("changed", "b", 0.001, 3, false), limit("new", "c", 0.001, 1, false))
	if got := take(second, "a", web, 5); got != 0 {
		t.Errorf("unchanged RateLimit: %d allowed, want 0 (its bucket is still empty)", got)
	}
	if got := take(second, "b", web, 5); got != 3 {
		t.Errorf("changed RateLimit: %d allowed, want its new burst of 3", got)
	}
	if got := take(second, "c", web, 5); got != 1 {
		t.Errorf("new RateLimit: %d allowed, want 1", got)
	}
	if got := take(build(Config{}, limit("kept", "a", 0.001, 2, false)), "a", web, 5); got != 2 {
		t.Errorf("without Previous: %d allowed, want 2", got)
	}
	if got := take(build(Config{Previous: second, MaxIdentities: 5}, limit("kept", "a", 0.001, 2, false)), "a", web, 5); got != 2 {
		t.Errorf("another identity bound: %d allowed, want 2 (the buckets start over)", got)
	}
}
