package termsafe

import (
	"bytes"
	"testing"
)

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                "v1.2.3",
		"héllo 世界":              "héllo 世界",
		"\x1b[2K\x1b[1A":        `\x1b[2K\x1b[1A`,
		"a\tb\nc\rd\x00e\x7f":   `a\x09b\x0ac\x0dd\x00e\x7f`,
		"csi\u009b31m":          `csi\u009b31m`,
		"abc\u202edef\u2066x":   `abc\u202edef\u2066x`,
		"lrm\u200e\u200f\u061c": `lrm\u200e\u200f\u061c`,
		"bad\xff\xc3":           `bad\xff\xc3`,
		"\\x1b literal":         `\x1b literal`, // backslashes are not escaped: display only
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
	s := "plain"
	if allocs := testing.AllocsPerRun(100, func() { s = String(s) }); allocs != 0 {
		t.Errorf("a string with nothing to escape allocates: %v", allocs)
	}
}

func TestText(t *testing.T) {
	if got, want := Text("a\n\tb\x1b[1A\r"), "a\n\tb\\x1b[1A\\x0d"; got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
}

func TestWriterKeepsLayout(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	n, err := w.Write([]byte("A\tB\n\x1b]0;pwned\x07\u202e\n"))
	if err != nil || n != len("A\tB\n\x1b]0;pwned\x07\u202e\n") {
		t.Fatalf("Write: %d %v", n, err)
	}
	if got, want := b.String(), "A\tB\n\\x1b]0;pwned\\x07\\u202e\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
