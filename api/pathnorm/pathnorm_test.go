package pathnorm

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		in   string
		want string
		err  error
	}{
		// Already canonical: returned as is.
		{in: "/", want: "/"},
		{in: "/admin", want: "/admin"},
		{in: "/admin/", want: "/admin/"},
		{in: "/a/b-c_d.e~f/!$&'()*+,=:@", want: "/a/b-c_d.e~f/!$&'()*+,=:@"},
		{in: "/...", want: "/..."},
		{in: "/a/.b/..c", want: "/a/.b/..c"},
		{in: "", want: "/"},

		// Dot segments and empty segments.
		{in: "//", want: "/"},
		{in: "//admin", want: "/admin"},
		{in: "/a//b///c", want: "/a/b/c"},
		{in: "/a/b//", want: "/a/b/"},
		{in: "/./admin", want: "/admin"},
		{in: "/a/./b/.", want: "/a/b/"},
		{in: "/a/b/..", want: "/a/"},
		{in: "/a/b/../", want: "/a/"},
		{in: "/a/b/../c", want: "/a/c"},
		{in: "/a/b/../../../../c", want: "/c"},
		{in: "/..", want: "/"},
		{in: "/../admin", want: "/admin"},
		{in: "/x//../admin", want: "/admin"},
		{in: "/.", want: "/"},

		// Percent-encoding.
		{in: "/%61dmin", want: "/admin"},
		{in: "/%41%44%4d%49%4E", want: "/ADMIN"},
		{in: "/%7e%2D%5f%2e", want: "/~-_."},
		{in: "/x/%2e%2e/admin", want: "/admin"},
		{in: "/x/.%2E/admin", want: "/admin"},
		{in: "/x/%2E/admin", want: "/x/admin"},
		{in: "/a%20b", want: "/a%20b"},
		{in: "/a%3fb%23c", want: "/a%3Fb%23c"},
		{in: "/100%25", want: "/100%25"},
		{in: "/%2561dmin", want: "/%2561dmin"},
		{in: "/caf%c3%a9", want: "/caf%C3%A9"},
		{in: "/café", want: "/caf%C3%A9"},
		{in: "/caf\xc3%A9", want: "/caf%C3%A9"},
		{in: "/日本", want: "/%E6%97%A5%E6%9C%AC"},
		{in: "/\U0001F600", want: "/%F0%9F%98%80"},
		{in: "/a b\"<>[]^`{|}", want: "/a%20b%22%3C%3E%5B%5D%5E%60%7B%7C%7D"},
		{in: "/%C2%A0", want: "/%C2%A0"},

		// Refusals.
		{in: "admin", err: ErrNotAbsolute},
		{in: "*", err: ErrNotAbsolute},
		{in: "/" + strings.Repeat("a", MaxLength), err: ErrTooLong},
		{in: "/a%2Fb", err: ErrEncodedSeparator},
		{in: "/a%2fb", err: ErrEncodedSeparator},
		{in: "/a%5Cb", err: ErrEncodedSeparator},
		{in: "/a%5cb", err: ErrEncodedSeparator},
		{in: "/x%2F..%2Fadmin", err: ErrEncodedSeparator},
		{in: "/a\\b", err: ErrBackslash},
		{in: "/admin;x=1", err: ErrPathParameter},
		{in: "/;/admin", err: ErrPathParameter},
		{in: "/admin%3Bx", err: ErrPathParameter},
		{in: "/a%", err: ErrBadEncoding},
		{in: "/a%4", err: ErrBadEncoding},
		{in: "/a%zz", err: ErrBadEncoding},
		{in: "/a%4g", err: ErrBadEncoding},
		{in: "/a%%41", err: ErrBadEncoding},
		{in: "/a%00", err: ErrControl},
		{in: "/a\x00", err: ErrControl},
		{in: "/a\n", err: ErrControl},
		{in: "/a%0d%0a", err: ErrControl},
		{in: "/a\x1b", err: ErrControl},
		{in: "/a%1B", err: ErrControl},
		{in: "/a%7f", err: ErrControl},
		{in: "/a\x7f", err: ErrControl},
		{in: "/a%C2%85", err: ErrControl},
		{in: "/a\u0085", err: ErrControl},
		{in: "/a\tb", err: ErrControl},
		{in: "/%C0%AF", err: ErrBadUTF8},
		{in: "/%C0%AE%C0%AE/admin", err: ErrBadUTF8},
		{in: "/%C1%81dmin", err: ErrBadUTF8},
		{in: "/%E0%80%AF", err: ErrBadUTF8},
		{in: "/%F0%80%80%AF", err: ErrBadUTF8},
		{in: "/%ED%A0%80", err: ErrBadUTF8},
		{in: "/%F4%90%80%80", err: ErrBadUTF8},
		{in: "/%FF", err: ErrBadUTF8},
		{in: "/%C3", err: ErrBadUTF8},
		{in: "/%C3/", err: ErrBadUTF8},
		{in: "/%C3a", err: ErrBadUTF8},
		{in: "/%C3%41", err: ErrBadUTF8},
		{in: "/\xc3", err: ErrBadUTF8},
		{in: "/\xff", err: ErrBadUTF8},
		{in: "/a?b", err: ErrQueryOrFragment},
		{in: "/a#b", err: ErrQueryOrFragment},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Normalize(%q) = %q, %v; want error %v", tt.in, got, err, tt.err)
			}
			if got != "" {
				t.Errorf("Normalize(%q) returned %q with its error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestErrorsArePrefixed(t *testing.T) {
	for _, err := range []error{ErrNotAbsolute, ErrTooLong, ErrEncodedSeparator, ErrBackslash, ErrPathParameter, ErrBadEncoding, ErrControl, ErrBadUTF8, ErrQueryOrFragment} {
		if !strings.HasPrefix(err.Error(), "pathnorm: ") {
			t.Errorf("%q lacks the package prefix", err)
		}
	}
}

func TestNormalizeCanonicalDoesNotAllocate(t *testing.T) {
	for _, p := range []string{"/", "/admin/users/42", "/caf%C3%A9/x", "/a/b/"} {
		n := testing.AllocsPerRun(100, func() {
			if _, err := Normalize(p); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("Normalize(%q): %v allocations, want 0", p, n)
		}
	}
	n := testing.AllocsPerRun(100, func() { _, _ = Normalize("/a%2Fb") })
	if n != 0 {
		t.Errorf("a refusal: %v allocations, want 0", n)
	}
}

// checkInvariants fails t when out, the normalized form of some path, is
// not canonical.
func checkInvariants(t *testing.T, in, out string) {
	t.Helper()
	if !strings.HasPrefix(out, "/") {
		t.Fatalf("Normalize(%q) = %q: does not start with '/'", in, out)
	}
	if strings.Contains(out, "//") {
		t.Fatalf("Normalize(%q) = %q: holds \"//\"", in, out)
	}
	for _, seg := range strings.Split(out[1:], "/") {
		if seg == "." || seg == ".." {
			t.Fatalf("Normalize(%q) = %q: holds a %q segment", in, out, seg)
		}
	}
	for i := 0; i < len(out); i++ {
		if c := out[i]; c < 0x21 || c > 0x7e || c == '\\' || c == ';' || c == '?' || c == '#' {
			t.Fatalf("Normalize(%q) = %q: holds byte %#x", in, out, c)
		}
	}
	if d := decode(out); !utf8.ValidString(d) {
		t.Fatalf("Normalize(%q) = %q: decodes to invalid UTF-8", in, out)
	}
	again, err := Normalize(out)
	if err != nil || again != out {
		t.Fatalf("not idempotent: Normalize(%q) = %q, Normalize(%q) = %q, %v", in, out, out, again, err)
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"/", "/admin", "//admin", "/x/../admin", "/%2e%2e/admin", "/a%2Fb", "/a;b", "/caf%c3%a9",
		"/%C0%AE", "/a/./b/../c/", "/a%00", "/日本/", "/a%", "/%41", "/a b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in)
		if err != nil {
			if out != "" {
				t.Fatalf("Normalize(%q) returned %q with error %v", in, out, err)
			}
			return
		}
		checkInvariants(t, in, out)
		// The canonical form means what the input meant to a plain
		// decoder: decode, then resolve dot segments.
		if in != "" && resolve(decode(in)) != decode(out) {
			t.Fatalf("Normalize(%q) = %q: means %q, the input means %q", in, out, decode(out), resolve(decode(in)))
		}
	})
}

// decode percent-decodes s once, leaving a malformed escape as is.
func decode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			h, ok1 := unhexRef(s[i+1])
			l, ok2 := unhexRef(s[i+2])
			if ok1 && ok2 {
				b.WriteByte(h<<4 | l)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unhexRef(c byte) (byte, bool) {
	const digits = "0123456789abcdef"
	i := strings.IndexByte(digits, c|0x20)
	if i < 0 || c|0x20 < '0' {
		return 0, false
	}
	return byte(i), true
}

// resolve is RFC 3986 remove_dot_segments over '/'-separated segments,
// dropping empty segments but keeping a final '/': the reference for
// Normalize's segment handling.
func resolve(p string) string {
	segs := strings.Split(p, "/")[1:]
	var out []string
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case "", ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}
