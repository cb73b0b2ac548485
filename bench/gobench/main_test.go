package main

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	out := `goos: linux
pkg: minimesh/dataplane/route
BenchmarkMatch/first-prefix-2         	61412005	        25.53 ns/op	       0 B/op	       0 allocs/op
BenchmarkPickBackend-2                	75957610	        22.92 ns/op	       0 B/op	       0 allocs/op
PASS
pkg: minimesh/api/pathnorm
BenchmarkNormalize/dots-2              	10571080	       164.4 ns/op	      16 B/op	       1 allocs/op
BenchmarkNoMem                         	100	       7 ns/op
`
	got := parse(out)
	want := []result{
		{"dataplane/route", "BenchmarkMatch/first-prefix", "25.53", "0", "0"},
		{"dataplane/route", "BenchmarkPickBackend", "22.92", "0", "0"},
		{"api/pathnorm", "BenchmarkNormalize/dots", "164.4", "16", "1"},
		{"api/pathnorm", "BenchmarkNoMem", "7", "?", "?"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestReplaceSection(t *testing.T) {
	doc := "# Results\n\nother section\n"
	once := replaceSection(doc, "one")
	twice := replaceSection(once+"\nnotes\n", "two")
	if strings.Contains(twice, "one\n") || !strings.Contains(twice, "two") || !strings.Contains(twice, "notes") ||
		!strings.Contains(twice, "other section") || strings.Count(twice, "## Hot-path") != 1 {
		t.Fatalf("got:\n%s", twice)
	}
}
