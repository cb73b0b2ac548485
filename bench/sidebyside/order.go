package main

import (
	"fmt"
	"strings"
)

// The order of a round's runs. Every run of a round used to follow the
// rotated row list (-order rotated): a row and the nginx row it is compared
// with could run minutes apart, and a slow stretch of the shared machine
// then fell on one of them only (the app itself cost a median 1.27× more
// behind one mesh-proxy than behind nginx in the same rounds of one run).
// With -order paired (the default) the rows compared in the per-round
// ratios run back to back: each unit is an nginx row with the mesh-proxy
// rows of its hops, every other row is a unit alone. The units are rotated
// per round as the rows were; inside a unit nginx runs next to each row
// compared with it (unitOrder), and the second load level (fewer
// connections, or the second open-loop rate) takes the unit in the reverse
// order, so a unit of two runs A B B A in one round and B A A B in the
// next: neither always goes first.

const (
	orderPaired  = "paired"
	orderRotated = "rotated"
)

// step is one run of a round: a row at one load level (an index into the
// connection counts, or into tailPercents).
type step struct {
	r     *row
	level int
}

// units groups rows for orderPaired: the one-hop nginx row with the one-hop
// mesh-proxy rows (this build's, the old binary's, the -tune rows), the
// nginx chain with the two-hop ones, every other row alone; a unit takes
// the place in the list of its first row. With orderRotated every row is a
// unit alone.
func units(rows []*row, order string) [][]*row {
	var out [][]*row
	at := map[string]int{} // shape → index in out of its nginx unit
	for _, r := range rows {
		key, ok := "", false
		if order == orderPaired {
			key, ok = pairKey(r)
		}
		if !ok {
			out = append(out, []*row{r})
			continue
		}
		if i, seen := at[key]; seen {
			out[i] = append(out[i], r)
			continue
		}
		at[key] = len(out)
		out = append(out, []*row{r})
	}
	// A unit whose nginx row is missing (left out at set-up) still keeps
	// its mesh-proxy rows together: harmless, they are compared with each
	// other.
	return out
}

// pairKey is the unit a row belongs to under orderPaired: its shape, for
// the nginx row of one or two hops and the mesh-proxy rows of the same
// hops; false for every other row.
func pairKey(r *row) (string, bool) {
	if r.t.shape != "one hop" && r.t.shape != "two hops" {
		return "", false
	}
	ref := "nginx"
	if r.t.shape == "two hops" {
		ref = "nginx → nginx"
	}
	if r.t.name == ref || strings.HasPrefix(r.t.name, "mesh-proxy") {
		return r.t.shape, true
	}
	return "", false
}

// roundSteps is the order of round's runs over levels load levels.
func roundSteps(rows []*row, order string, round, levels int) []step {
	us := units(rows, order)
	var out []step
	for k := range us {
		u := us[(k+round)%len(us)]
		first := unitOrder(u, round)
		for level := range levels {
			for j := range first {
				i := j
				if level%2 == 1 {
					i = len(first) - 1 - j
				}
				out = append(out, step{r: first[i], level: level})
			}
		}
	}
	return out
}

// unitOrder is the order of u's members at round's first load level (the
// second takes them in reverse). The other members are rotated per round
// and the nginx row, u's first, stands in the middle of them, so it runs
// next to every row compared with it: N A, then A N, for two; A N B, then
// B N A, for three. A unit without its nginx row is rotated.
func unitOrder(u []*row, round int) []*row {
	n := len(u)
	if n < 2 {
		return u
	}
	if _, ok := pairKey(u[0]); !ok || strings.HasPrefix(u[0].t.name, "mesh-proxy") {
		out := make([]*row, n)
		for j := range u {
			out[j] = u[(j+round)%n]
		}
		return out
	}
	others := u[1:]
	k := len(others)
	at := (k + round%2) / 2 // nginx's place: alternates for one other row
	out := make([]*row, 0, n)
	for j := range k {
		if j == at {
			out = append(out, u[0])
		}
		out = append(out, others[(j+round)%k])
	}
	if at == k {
		out = append(out, u[0])
	}
	return out
}

// orderText says, for the results' header, how each round was ordered.
func orderText(order string) string {
	if order == orderRotated {
		return "every target in turn (order rotated per round) gets"
	}
	return "every target in turn (order rotated per round; the nginx row of one or two hops and the mesh-proxy rows of the same hops back to back, " +
		"nginx next to each (A N B with the old binary), the order alternating per round and reversed at the second load level: A B B A, then B A A B) gets"
}

func checkOrder(order string) error {
	if order != orderPaired && order != orderRotated {
		return fmt.Errorf("-order %q: want %s or %s", order, orderPaired, orderRotated)
	}
	return nil
}
