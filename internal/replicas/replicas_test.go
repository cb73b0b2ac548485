package replicas

import (
	"strings"
	"testing"
)

// TestParse: a list is split and each address checked; refusals name the
// flag and the address.
func TestParse(t *testing.T) {
	got, err := Parse("--control-plane", "127.0.0.1:1, meshd-0.meshd:15010,[::1]:3")
	if err != nil || strings.Join(got, "|") != "127.0.0.1:1|meshd-0.meshd:15010|[::1]:3" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "a:1,", "a", ":1", "a:0", "a:99999", "a:x", "a/b:1", "u@h:1", strings.Repeat("a:1,", MaxAddresses) + "a:1"} {
		if _, err := Parse("--control-plane", bad); err == nil || !strings.Contains(err.Error(), "--control-plane") {
			t.Errorf("%q: %v, want a refusal naming the flag", bad, err)
		}
	}
}
