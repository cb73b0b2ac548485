package accesslog

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzAppendString: whatever a field holds, its encoding is one valid JSON
// string without raw control characters, and decodes to the field with
// each invalid byte replaced by U+FFFD.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\nb", "\x1b[2J", `"\`, "\xff\xfe", "é\u2028\u0085", strings.Repeat("ü", MaxFieldBytes)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendString(nil, s)
		for _, c := range out {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("raw control byte %#x in %q", c, out)
			}
		}
		for _, r := range []rune{'\u2028', '\u2029', '\u0085'} {
			if bytes.ContainsRune(out, r) {
				t.Fatalf("raw %U in %q", r, out)
			}
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%q encodes to invalid JSON %q: %v", s, out, err)
		}
		want := s
		truncated := len(s) > MaxFieldBytes
		if truncated {
			cut := MaxFieldBytes
			for cut > 0 && !utf8.RuneStart(s[cut]) {
				cut--
			}
			want = s[:cut]
		}
		var b strings.Builder
		for i := 0; i < len(want); {
			r, n := utf8.DecodeRuneInString(want[i:])
			b.WriteRune(r) // RuneError for an invalid byte
			i += n
		}
		want = b.String()
		if truncated {
			want += "..."
		}
		if got != want {
			t.Fatalf("%q round-trips to %q, want %q", s, got, want)
		}
	})
}
