package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Messages docs/troubleshooting.md quotes that come from outside minimesh's
// code, and so cannot be found in it.
var externalMessages = map[string]string{
	"connect: connection refused": "the operating system, through gRPC",
	"no such file or directory":   "the operating system",
}

// The topics the page must keep covering (issue 23): each must be in some
// heading.
var requiredTopics = []string{
	"connection refused", "no operator credential", "join token expired",
	"no uses left", "pin mismatch", "NACKed", "CSR identity mismatch",
	"forbidden by authorization policy", "no valid SVID", "etcd unreachable",
	"unsupported schema version", "trust domain",
}

var quoted = regexp.MustCompile("`([^`]+)`")

// goSources returns the text of every non-test Go file of the module.
func goSources(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "bin", ".bin", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		b.Write(src)
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// troubleshootingEntries returns the page's "### " entries: heading → body.
func troubleshootingEntries(page string) (headings []string, bodies map[string]string) {
	bodies = map[string]string{}
	for _, part := range strings.Split(page, "\n### ")[1:] {
		heading, body, _ := strings.Cut(part, "\n")
		if i := strings.Index(body, "\n## "); i >= 0 {
			body = body[:i]
		}
		headings = append(headings, heading)
		bodies[heading] = body
	}
	return headings, bodies
}

// troubleshootingProblems lists what is wrong with the page: a message
// quoted in a heading that sources do not hold, an entry without its
// meaning and remedy, a topic without an entry.
func troubleshootingProblems(page, sources string) []string {
	var problems []string
	headings, bodies := troubleshootingEntries(page)
	if len(headings) < 30 {
		problems = append(problems, fmt.Sprintf("only %d entries", len(headings)))
	}
	for _, h := range headings {
		qs := quoted.FindAllStringSubmatch(h, -1)
		if len(qs) == 0 {
			problems = append(problems, fmt.Sprintf("heading %q quotes no message", h))
		}
		for _, q := range qs {
			msg := q[1]
			if _, ok := externalMessages[msg]; ok {
				continue
			}
			if !strings.Contains(sources, msg) {
				problems = append(problems, fmt.Sprintf("heading %q: %q is not in the code any more: update docs/troubleshooting.md", h, msg))
			}
		}
		if b := bodies[h]; !strings.Contains(b, "**Means:**") || !strings.Contains(b, "**Do:**") {
			problems = append(problems, fmt.Sprintf("entry %q does not say both what it means and what to do", h))
		}
	}
	all := strings.Join(headings, "\n")
	for _, topic := range requiredTopics {
		if !strings.Contains(all, topic) {
			problems = append(problems, fmt.Sprintf("no entry for %q", topic))
		}
	}
	return problems
}

// Every message quoted in a heading of docs/troubleshooting.md is still
// printed by the code (it is in a non-test Go source), and every entry
// says what it means and what to do.
func TestTroubleshootingMessagesExist(t *testing.T) {
	page, err := os.ReadFile(filepath.Join(root, "docs/troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range troubleshootingProblems(string(page), goSources(t)) {
		t.Error(p)
	}
}

// The check fails on a page quoting a message the code does not print.
func TestTroubleshootingCheckFindsAStaleMessage(t *testing.T) {
	page, err := os.ReadFile(filepath.Join(root, "docs/troubleshooting.md"))
	if err != nil {
		t.Fatal(err)
	}
	stale := strings.Replace(string(page), "### `identity: join token has no uses left`", "### `identity: join token is all used up`", 1)
	if stale == string(page) {
		t.Fatal("the page has no entry to alter")
	}
	got := strings.Join(troubleshootingProblems(stale, goSources(t)), "\n")
	if !strings.Contains(got, `"identity: join token is all used up" is not in the code any more`) {
		t.Fatalf("a stale message passed: %s", got)
	}
}
