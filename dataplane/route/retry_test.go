package route

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

func TestRetryOnMatches(t *testing.T) {
	all := []struct {
		f      Failure
		status int
	}{
		{FailureConnect, 0}, {FailureReset, 0}, {FailureNone, 500}, {FailureNone, 501}, {FailureNone, 502},
		{FailureNone, 503}, {FailureNone, 504}, {FailureNone, 599}, {FailureNone, 409}, {FailureNone, 200},
		{FailureNone, 404}, {FailureNone, 429},
	}
	// For each set, the outcomes (in the order of all) it retries.
	tests := []struct {
		on   RetryOn
		want string // one char per outcome of all: y or n
	}{
		{RetryOn5xx, "yyyyyyyynnnn"},
		{RetryOnGatewayError, "yynnyyynnnnn"},
		{RetryOnReset, "nynnnnnnnnnn"},
		{RetryOnConnectFailure, "ynnnnnnnnnnn"},
		{RetryOnRetriable4xx, "nnnnnnnnynnn"},
		{RetryOnConnectFailure | RetryOnReset | RetryOnGatewayError, "yynnyyynnnnn"},
		{RetryOnRetriable4xx | RetryOnReset, "nynnnnnnynnn"},
		{0, "nnnnnnnnnnnn"},
	}
	for _, tt := range tests {
		for i, o := range all {
			if got := tt.on.Matches(o.f, o.status); got != (tt.want[i] == 'y') {
				t.Errorf("RetryOn(%05b).Matches(%d, %d) = %v", tt.on, o.f, o.status, got)
			}
		}
	}
}

func TestRetryable(t *testing.T) {
	base := RetryPolicy{Attempts: 2, On: RetryOnGatewayError, MaxBodyBytes: 100}
	gw := Attempt{Method: "GET", Status: 503}
	tests := []struct {
		name   string
		policy func(p *RetryPolicy)
		a      func(a *Attempt)
		want   bool
	}{
		{"retryable", nil, nil, true},
		{"second retry", nil, func(a *Attempt) { a.Retries = 1 }, true},
		{"attempts used up", nil, func(a *Attempt) { a.Retries = 2 }, false},
		{"no attempts", func(p *RetryPolicy) { p.Attempts = 0 }, nil, false},
		{"status not retried", nil, func(a *Attempt) { a.Status = 500 }, false},
		{"success", nil, func(a *Attempt) { a.Status = 200 }, false},
		{"connect failure", nil, func(a *Attempt) { a.Failure, a.Status = FailureConnect, 0 }, true},
		{"HEAD", nil, func(a *Attempt) { a.Method = "HEAD" }, true},
		{"OPTIONS", nil, func(a *Attempt) { a.Method = "OPTIONS" }, true},
		{"TRACE", nil, func(a *Attempt) { a.Method = "TRACE" }, true},
		{"PUT", nil, func(a *Attempt) { a.Method = "PUT" }, true},
		{"DELETE", nil, func(a *Attempt) { a.Method = "DELETE" }, true},
		{"POST not idempotent", nil, func(a *Attempt) { a.Method = "POST" }, false},
		{"PATCH not idempotent", nil, func(a *Attempt) { a.Method = "PATCH" }, false},
		{"CONNECT not idempotent", nil, func(a *Attempt) { a.Method = "CONNECT" }, false},
		{"lower-case get is not GET", nil, func(a *Attempt) { a.Method = "get" }, false},
		{"POST when the route says so", func(p *RetryPolicy) { p.NonIdempotent = true }, func(a *Attempt) { a.Method = "POST" }, true},
		{"body fits", nil, func(a *Attempt) { a.BodyBytes = 100 }, true},
		{"body too large", nil, func(a *Attempt) { a.BodyBytes = 101 }, false},
		{"body not kept", nil, func(a *Attempt) { a.BodyBytes = -1 }, false},
	}
	for _, tt := range tests {
		p, a := base, gw
		if tt.policy != nil {
			tt.policy(&p)
		}
		if tt.a != nil {
			tt.a(&a)
		}
		if got := p.Retryable(a); got != tt.want {
			t.Errorf("%s: Retryable = %v", tt.name, got)
		}
		// No budget: Retry agrees.
		if got := p.Retry(a); got != tt.want {
			t.Errorf("%s: Retry = %v", tt.name, got)
		}
	}
	var nilPolicy *RetryPolicy
	if nilPolicy.Retryable(gw) || nilPolicy.Retry(gw) {
		t.Error("a nil policy retries")
	}
}

func TestBudgetPercent(t *testing.T) {
	b := NewBudget(BudgetConfig{Percent: 20, Clock: newClock()})
	if b.Withdraw() {
		t.Fatal("an empty budget allowed a retry")
	}
	for range 10 {
		b.Request()
	}
	for i := range 2 {
		if !b.Withdraw() {
			t.Fatalf("retry %d of 2 refused after 10 requests at 20%%", i+1)
		}
	}
	if b.Withdraw() {
		t.Fatal("a third retry after 10 requests at 20%")
	}
	// Capacity: a long calm period banks at most 100 requests' worth.
	for range 100000 {
		b.Request()
	}
	n := 0
	for b.Withdraw() {
		n++
	}
	if n != 20 {
		t.Fatalf("%d retries banked, want 20", n)
	}
}

func TestBudgetFloor(t *testing.T) {
	clock := newClock()
	p := &RetryPolicy{Attempts: 5, On: RetryOn5xx, MaxBodyBytes: 10,
		Budget: NewBudget(BudgetConfig{Percent: 1, MinPerSecond: 3, Clock: clock})}
	a := Attempt{Method: "GET", Status: 500}
	for i := range 3 {
		if !p.Retry(a) {
			t.Fatalf("floor retry %d refused", i+1)
		}
	}
	if p.Retry(a) {
		t.Fatal("a fourth retry in the same second")
	}
	clock.Add(time.Second)
	for i := range 3 {
		if !p.Retry(a) {
			t.Fatalf("after a second, retry %d refused", i+1)
		}
	}
	if p.Retry(a) {
		t.Fatal("the floor refilled beyond its size")
	}
	// Not retryable: the budget is not touched.
	clock.Add(time.Second)
	if p.Retry(Attempt{Method: "GET", Status: 200}) {
		t.Fatal("retried a 200")
	}
	for i := range 3 {
		if !p.Retry(a) {
			t.Fatalf("retry %d refused: a refused retry used the budget", i+1)
		}
	}
}

func TestBudgetConcurrent(t *testing.T) {
	clock := newClock()
	b := NewBudget(BudgetConfig{Percent: 10, Capacity: 1 << 20, Clock: clock})
	var wg sync.WaitGroup
	var granted atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10000 {
				b.Request()
				if b.Withdraw() {
					granted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for b.Withdraw() {
		granted.Add(1)
	}
	if g := granted.Load(); g != 4000 {
		t.Errorf("%d retries granted for 40000 requests at 10%%, want 4000", g)
	}
}

func TestBudgetNil(t *testing.T) {
	var b *Budget
	b.Request()
	if !b.Withdraw() {
		t.Error("a nil budget refused")
	}
}

func TestIsIdempotent(t *testing.T) {
	for m, want := range map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true, "TRACE": true, "PUT": true, "DELETE": true, "POST": false, "PATCH": false, "CONNECT": false, "": false} {
		if IsIdempotent(m) != want {
			t.Errorf("IsIdempotent(%q) != %v", m, want)
		}
	}
}

// TestBudgetKeptAcrossPush: a push that leaves a route's budget settings
// as they were keeps its Budget (the balance earned and the per-second
// floor already spent); a changed budget, or another route, starts anew.
// Before, every push refilled the floor: up to MinPerSecond extra retries
// per push against a failing upstream.
func TestBudgetKeptAcrossPush(t *testing.T) {
	clock := newClock()
	withBudget := func(name string, pct float64, floor uint32) *api.Route {
		r := mkRoute(name, nil)
		r.Spec.Retries = &meshv1.RetryPolicy{Attempts: 2, Budget: &meshv1.RetryBudget{Percent: pct, MinRetriesPerSecond: floor}}
		return r
	}
	compile := func(prev *Table, routes ...*api.Route) *Table {
		t.Helper()
		tbl, err := Compile(Config{Clock: clock, Previous: prev}, routes)
		if err != nil {
			t.Fatal(err)
		}
		return tbl
	}
	budget := func(tbl *Table, name string) *Budget {
		for _, r := range tbl.routes {
			if r.Name == name {
				return r.Retry.Budget
			}
		}
		t.Fatalf("no route %s", name)
		return nil
	}
	old := compile(nil, withBudget("a", 10, 2), withBudget("b", 10, 2))
	a := budget(old, "a")
	for range 100 { // 10 retries earned
		a.Request()
	}
	for a.floor.AllowN(clock.Now(), 1) { // this second's floor spent
	}

	// Same settings: the same Budget, its balance and spent floor too.
	next := compile(old, withBudget("a", 10, 2), withBudget("b", 20, 2))
	if budget(next, "a") != a {
		t.Fatal("an unchanged route's budget was replaced by the push")
	}
	got := 0
	for budget(next, "a").Withdraw() {
		got++
	}
	if got != 10 {
		t.Errorf("%d retries after the push, want the 10 earned before it (no refilled floor)", got)
	}
	// Changed settings start anew.
	if budget(next, "b") == budget(old, "b") {
		t.Error("a changed budget kept the old one")
	}
	// The old table is not modified.
	if budget(old, "a") != a || budget(old, "b") == budget(next, "b") {
		t.Error("the previous table was modified")
	}
}
