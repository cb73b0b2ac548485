package filesync

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// FuzzCleanPath: an accepted path is relative, has no ".." component,
// stays beneath any directory it is joined to, and is its own clean form;
// a refused one says why with a *PathError.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"a", "a/b/c.conf", "./a//b", "../x", "/etc/passwd", "a/../b", "..", ".", "", "a\x00", ".minimesh-filesync.json", "x/.minimesh-filesync-tmp-1", "....", "a/..b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := CleanPath(p)
		if err != nil {
			var pe *PathError
			if !errors.As(err, &pe) || pe.Path != p || pe.Reason == "" {
				t.Fatalf("CleanPath(%q) error %v is not a *PathError naming the path", p, err)
			}
			if !errors.Is(err, ErrUnsafePath) && !errors.Is(err, ErrInvalidFile) {
				t.Fatalf("CleanPath(%q) error %v wraps no sentinel", p, err)
			}
			return
		}
		if got == "" || strings.HasPrefix(got, "/") || strings.Contains(got, "\x00") {
			t.Fatalf("CleanPath(%q) = %q", p, got)
		}
		for _, c := range strings.Split(got, "/") {
			if c == ".." || c == "." || c == "" {
				t.Fatalf("CleanPath(%q) = %q has component %q", p, got, c)
			}
		}
		const base = "/shared/dir"
		if j := filepath.Join(base, got); !strings.HasPrefix(j, base+"/") {
			t.Fatalf("CleanPath(%q) = %q escapes: %q", p, got, j)
		}
		if again, err := CleanPath(got); err != nil || again != got {
			t.Fatalf("CleanPath(%q) = %q, %v; not idempotent", got, again, err)
		}
	})
}

func TestParseSignal(t *testing.T) {
	tests := []struct {
		in   string
		want syscall.Signal
		ok   bool
	}{
		{"HUP", syscall.SIGHUP, true},
		{"sighup", syscall.SIGHUP, true},
		{" SIGUSR1 ", syscall.SIGUSR1, true},
		{"usr2", syscall.SIGUSR2, true},
		{"1", syscall.SIGHUP, true},
		{"WINCH", syscall.SIGWINCH, true},
		{"KILL", 0, false},
		{"9", 0, false},
		{"STOP", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSignal(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSignal(%q) = %v, %v", tt.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseSignal(%q) error %v wraps no sentinel", tt.in, err)
		}
	}
}
