package logrecord_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"minimesh/dataplane/logrecord"
)

// Whatever a peer or an app sends, the string stays one JSON string on one
// line, with no byte a terminal would act on, and decodes to the input
// (invalid UTF-8 as U+FFFD).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "a\"b\\c", "line\nbreak\r\t", "\x00\x1b[31m\x7f", "\u0085\u009b\u2028\u2029", "\xff\xfe", "é漢字🙂"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := logrecord.AppendString([]byte("x"), s)
		if b[0] != 'x' {
			t.Fatal("the prefix was overwritten")
		}
		out := string(b[1:])
		for _, r := range out {
			if r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f || r == '\u2028' || r == '\u2029' {
				t.Fatalf("raw %U in %q", r, out)
			}
		}
		var got string
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		if want := strings.ToValidUTF8(s, "\uFFFD"); utf8.ValidString(s) && got != want {
			t.Fatalf("decoded %q, want %q", got, want)
		}
	})
}
