package main

import (
	"strings"
	"testing"
)

func orderRows(names ...string) []*row {
	var rows []*row
	for _, n := range names {
		shape := "one hop"
		switch {
		case n == "app direct":
			shape = "direct"
		case strings.Contains(n, "→"):
			shape = "two hops"
		}
		rows = append(rows, &row{t: &target{name: n, shape: shape}})
	}
	return rows
}

func stepText(steps []step) string {
	var b []string
	for _, s := range steps {
		b = append(b, s.r.t.name+"@"+string(rune('0'+s.level)))
	}
	return strings.Join(b, ", ")
}

func TestRoundStepsPaired(t *testing.T) {
	rows := orderRows("app direct", "nginx", "haproxy", "mesh-proxy", "nginx → nginx", "mesh-proxy → mesh-proxy")
	for round, want := range []string{
		// The compared rows back to back, A B B A; the rest as before.
		"app direct@0, app direct@1, nginx@0, mesh-proxy@0, mesh-proxy@1, nginx@1, haproxy@0, haproxy@1, " +
			"nginx → nginx@0, mesh-proxy → mesh-proxy@0, mesh-proxy → mesh-proxy@1, nginx → nginx@1",
		// Next round: units rotated by one, each pair B A A B.
		"mesh-proxy@0, nginx@0, nginx@1, mesh-proxy@1, haproxy@0, haproxy@1, " +
			"mesh-proxy → mesh-proxy@0, nginx → nginx@0, nginx → nginx@1, mesh-proxy → mesh-proxy@1, app direct@0, app direct@1",
	} {
		if got := stepText(roundSteps(rows, orderPaired, round, 2)); got != want {
			t.Errorf("round %d:\n got %s\nwant %s", round, got, want)
		}
	}
}

func TestRoundStepsUnitOfThree(t *testing.T) {
	rows := orderRows("nginx", "mesh-proxy", "mesh-proxy (old binary)")
	// nginx in the middle, next to both rows divided by it.
	for round, want := range []string{
		"mesh-proxy@0, nginx@0, mesh-proxy (old binary)@0, mesh-proxy (old binary)@1, nginx@1, mesh-proxy@1",
		"mesh-proxy (old binary)@0, nginx@0, mesh-proxy@0, mesh-proxy@1, nginx@1, mesh-proxy (old binary)@1",
		"mesh-proxy@0, nginx@0, mesh-proxy (old binary)@0, mesh-proxy (old binary)@1, nginx@1, mesh-proxy@1",
	} {
		if got := stepText(roundSteps(rows, orderPaired, round, 2)); got != want {
			t.Errorf("round %d:\n got %s\nwant %s", round, got, want)
		}
	}
}

// orderRotated is the order every run had before -order: the rows rotated
// per round, each row's load levels in turn.
func TestRoundStepsRotated(t *testing.T) {
	rows := orderRows("nginx", "haproxy", "mesh-proxy")
	want := "haproxy@0, haproxy@1, mesh-proxy@0, mesh-proxy@1, nginx@0, nginx@1"
	if got := stepText(roundSteps(rows, orderRotated, 1, 2)); got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	// Every row runs once per level in every round, whatever the order.
	for _, order := range []string{orderPaired, orderRotated} {
		for round := range 4 {
			seen := map[string]int{}
			for _, s := range roundSteps(orderRows("app direct", "nginx", "caddy", "mesh-proxy", "nginx → nginx", "caddy → caddy", "mesh-proxy → mesh-proxy"), order, round, 2) {
				seen[s.r.t.name+string(rune('0'+s.level))]++
			}
			if len(seen) != 14 {
				t.Errorf("%s round %d: %d distinct runs, want 14: %v", order, round, len(seen), seen)
			}
			for k, n := range seen {
				if n != 1 {
					t.Errorf("%s round %d: %s ran %d times", order, round, k, n)
				}
			}
		}
	}
	if checkOrder("shuffled") == nil {
		t.Error("checkOrder accepted an unknown order")
	}
}

// A unit whose nginx row was left out at set-up keeps its mesh-proxy rows
// together, rotated.
func TestRoundStepsUnitWithoutNginx(t *testing.T) {
	rows := orderRows("mesh-proxy", "mesh-proxy (old binary)")
	want := "mesh-proxy (old binary)@0, mesh-proxy@0, mesh-proxy@1, mesh-proxy (old binary)@1"
	if got := stepText(roundSteps(rows, orderPaired, 1, 2)); got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
