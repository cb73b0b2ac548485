// Package termsafe makes strings that others control safe to print on an
// operator's terminal (the class of kubectl's CVE-2021-25743): a
// workload's version, a NACK reason, a name, a path or a command line can
// hold escape sequences that move the cursor, erase a line or recolour the
// screen, so a table shows what the workload wants instead of what is
// there; bidirectional overrides reorder what is shown.
//
// String escapes every C0 control (tab and newline too: a value must not
// make a new cell or row), DEL, every C1 control (U+0080-U+009F), the
// bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E,
// U+2066-U+2069) and invalid UTF-8: a byte below 0x80 or an invalid byte
// as \xNN, a rune as \uNNNN. Writer does the same to everything written
// through it except newline and tab, for whole outputs whose layout is
// ours. A string with nothing to escape is returned as is.
package termsafe

import (
	"io"
	"strconv"
	"unicode/utf8"
)

// String returns s with every control, bidirectional control and invalid
// byte escaped.
func String(s string) string {
	return escape(s, false)
}

// Text is String sparing newline and tab: for text whose lines are
// meant, such as an error message of several lines.
func Text(s string) string {
	return escape(s, true)
}

// needs reports whether the rune r, decoded from size bytes, must be
// escaped; keepLayout spares newline and tab.
func needs(r rune, size int, keepLayout bool) bool {
	switch {
	case r == utf8.RuneError && size <= 1:
		return true // invalid UTF-8
	case r < 0x20:
		return !(keepLayout && (r == '\n' || r == '\t'))
	case r < 0x7f:
		return false
	case r <= 0x9f:
		return true // DEL and C1
	}
	return isBidi(r)
}

func isBidi(r rune) bool {
	switch {
	case r == 0x061c, r == 0x200e, r == 0x200f:
		return true
	case r >= 0x202a && r <= 0x202e:
		return true
	case r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

func escape(s string, keepLayout bool) string {
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if needs(r, size, keepLayout) {
			break
		}
		i += size
	}
	if i == len(s) {
		return s
	}
	b := make([]byte, 0, len(s)+16)
	b = append(b, s[:i]...)
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if !needs(r, size, keepLayout) {
			b = append(b, s[i:i+size]...)
			i += size
			continue
		}
		if r == utf8.RuneError || r < 0x80 {
			b = append(b, '\\', 'x', hex[s[i]>>4], hex[s[i]&0xf])
		} else {
			b = append(b, `\u`...)
			q := strconv.FormatInt(int64(r), 16)
			for n := len(q); n < 4; n++ {
				b = append(b, '0')
			}
			b = append(b, q...)
		}
		i += size
	}
	return string(b)
}

const hex = "0123456789abcdef"

// Writer escapes what is written through it as String does, except
// newline and tab. Each Write is escaped on its own: a rune split across
// two Writes shows as invalid bytes.
type Writer struct {
	w io.Writer
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write implements io.Writer; it reports len(p) written when the escaped
// form was written whole.
func (w *Writer) Write(p []byte) (int, error) {
	s := escape(string(p), true)
	if _, err := io.WriteString(w.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ClearScreen moves the cursor home and clears the terminal behind w: the
// one control sequence a Writer lets through, and only by this call
// (meshctl's -w redraws in place).
func (w *Writer) ClearScreen() error {
	_, err := io.WriteString(w.w, "\x1b[H\x1b[2J")
	return err
}
