package meshctl_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"minimesh/controlplane"
	"minimesh/controlplane/controlplanetest"
	"minimesh/internal/meshctl"
)

// Every command, cobra's help and completion too, has an Examples:
// section; the root says what meshctl does.
func TestEveryCommandHasExamples(t *testing.T) {
	root := meshctl.NewRoot(meshctl.IO{})
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		if !c.Hidden {
			n++
			if strings.TrimSpace(c.Example) == "" {
				t.Errorf("%s has no Example", c.CommandPath())
			}
			var out strings.Builder
			c.SetOut(&out)
			_ = c.Usage()
			if !strings.Contains(out.String(), "Examples:") {
				t.Errorf("%s: help has no Examples: section", c.CommandPath())
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	if n < 30 {
		t.Errorf("walked %d commands; the tree lost some", n)
	}
	for _, w := range []string{"apply, get, diff and delete", "proxy-status", "token create", "ca rotate", "authz explain"} {
		if !strings.Contains(root.Long, w) {
			t.Errorf("the root's summary does not name %q", w)
		}
	}
}

// complete runs cobra's __complete as a shell does and returns the
// candidates (without the directive line).
func complete(t *testing.T, m *controlplanetest.Meshd, args ...string) []string {
	t.Helper()
	out, err := run(t, m, append([]string{"__complete"}, args...)...)
	if err != nil {
		t.Fatalf("__complete %v: %v", args, err)
	}
	var cands []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, ":") && l != "" {
			v, _, _ := strings.Cut(l, "\t")
			cands = append(cands, v)
		}
	}
	return cands
}

// Completion offers kinds, names from meshd (in -n's namespace),
// instance IDs and -o values.
func TestDynamicCompletion(t *testing.T) {
	m := controlplanetest.Start(t, controlplane.Config{})
	if _, err := run(t, m, "apply", "-f", "testdata/mesh.yaml", "-f", "testdata/allkinds.yaml"); err != nil {
		t.Fatal(err)
	}
	id, stop := startAgent(t, m, m.Token(t, "default", "web", 1), "web")
	defer stop()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"get", ""}, "all ap cf rl route rt svc"},
		{[]string{"get", "r"}, "ratelimit rl route rt"},
		{[]string{"get", "route", ""}, "api-v1"},
		{[]string{"get", "rt", "-n", "prod", ""}, "10-api"},
		{[]string{"delete", "rl", ""}, "api"},
		{[]string{"get", "rt", "-n", ""}, "default prod"},
		{[]string{"proxy-config", ""}, id},
		{[]string{"top", "w"}, id},
		{[]string{"proxy", "revoke", ""}, id},
		{[]string{"check", "--proxy", ""}, id},
		{[]string{"get", "-o", ""}, "json jsonpath= name table wide yaml"},
		{[]string{"certs", "-o", "j"}, "json jsonpath="},
		{[]string{"proxy-config", id, ""}, ""},
	} {
		got := strings.Join(complete(t, m, c.args...), " ")
		switch {
		case c.args[0] == "get" && len(c.args) == 2:
			// kinds: every one the want names is offered
			for _, w := range strings.Fields(c.want) {
				if !strings.Contains(" "+got+" ", " "+w+" ") {
					t.Errorf("complete %v = %q, want %q among them", c.args, got, w)
				}
			}
		case got != c.want:
			t.Errorf("complete %v = %q, want %q", c.args, got, c.want)
		}
	}
}

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
		show bool
	}{
		{nil, 0, false},
		{errors.New("x"), 1, true},
		{&meshctl.ExitError{Code: 1, Silent: true, Err: errors.New("denied")}, 1, false},
		{&meshctl.ExitError{Code: 2, Err: errors.New("diff failed")}, 2, true},
	} {
		if code, show := meshctl.ExitCode(c.err); code != c.code || show != c.show {
			t.Errorf("ExitCode(%v) = %d, %v; want %d, %v", c.err, code, show, c.code, c.show)
		}
	}
}
