package main

import (
	"strings"
	"testing"
)

// TestReplaceHABlock: the first run adds the section right after the
// single-replica fan-out section; later runs replace only the block
// between the markers, keeping the notes after it and every other section.
func TestReplaceHABlock(t *testing.T) {
	doc := "# Benchmark results\n\n## Config push fan-out\n\nsingle table\n\n## Side by side\n\nother\n"
	once := replaceHABlock(doc, "first table")
	if !strings.Contains(once, "single table\n\n## Fan-out over three replicas (issue 19)") ||
		!strings.Contains(once, haEnd+"\n\n## Side by side\n\nother\n") {
		t.Fatalf("first run: the section is not between the fan-out and side-by-side sections:\n%s", once)
	}
	withNotes := strings.Replace(once, haEnd+"\n", haEnd+"\n\nhand-written notes\n", 1)
	twice := replaceHABlock(withNotes, "second table")
	if strings.Contains(twice, "first table") || !strings.Contains(twice, "second table") ||
		!strings.Contains(twice, "hand-written notes") || !strings.Contains(twice, "single table") ||
		strings.Count(twice, "## Fan-out over three replicas") != 1 || strings.Count(twice, haBegin) != 1 {
		t.Fatalf("second run:\n%s", twice)
	}
	if got := replaceHABlock("# Results\n", "t"); !strings.HasSuffix(got, haBegin+"\nt\n"+haEnd+"\n") {
		t.Fatalf("no fan-out section: want the section appended, got:\n%s", got)
	}
}
