package deadline

import (
	"testing"
	"time"
)

// Within sets the first deadline, leaves one that ends between 7/8 d and
// d from now, and moves one that ends sooner, later, or is unknown.
func TestWithin(t *testing.T) {
	var l Lazy
	var set []time.Time
	setter := func(t time.Time) error { set = append(set, t); return nil }
	const d = 80 * time.Second
	t0 := time.Unix(1000, 0)
	l.Within(t0, d, setter)
	l.Within(t0.Add(5*time.Second), d, setter)  // ends in 75 s: kept
	l.Within(t0.Add(10*time.Second), d, setter) // ends in 70 s = 7/8 d: kept
	if len(set) != 1 || !set[0].Equal(t0.Add(d)) {
		t.Fatalf("set %v, want only %v", set, t0.Add(d))
	}
	l.Within(t0.Add(11*time.Second), d, setter) // ends in 69 s: moved
	if len(set) != 2 || !set[1].Equal(t0.Add(11*time.Second+d)) {
		t.Fatalf("a deadline ending too soon was not moved: %v", set)
	}
	l.Within(t0, 10*time.Second, setter) // a shorter bound: ends too late
	if len(set) != 3 || !set[2].Equal(t0.Add(10*time.Second)) {
		t.Fatalf("a deadline ending too late was not moved: %v", set)
	}
	l.Forget()
	l.Within(t0, 10*time.Second, setter)
	if len(set) != 4 {
		t.Fatalf("a forgotten deadline was not set again: %v", set)
	}
	if l.Passed(t0) || !l.Passed(t0.Add(10*time.Second)) {
		t.Fatal("Passed")
	}
	l.Forget()
	if l.Passed(t0.Add(time.Hour)) {
		t.Fatal("an unknown deadline has passed")
	}
}
