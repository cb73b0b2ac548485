package edge

import (
	"strings"
	"testing"
)

// TestStrictFraming checks the HTTP/1.1 framing rules on byte streams,
// fed whole and one byte at a time.
func TestStrictFraming(t *testing.T) {
	ok := []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nTrailer: v\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n\n\r \t\x00",
		"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 2*maxFrameLine) + "\r\nContent-Length: 0\r\n\r\n",
	}
	bad := []string{
		"GET / HTTP/1.1\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\nHost: a\n\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n w\r\n\r\n",
		// net/http ignores an HTTP/1.0 request's Transfer-Encoding: the
		// chunks would be the next request to it.
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		// A framing field longer than the scanner keeps is not guessed at.
		"POST / HTTP/1.1\r\nContent-Length: 1" + strings.Repeat(" ", maxFrameLine) + "\r\n\r\nx",
		"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", 2*maxFrameLine) + "\nY: b\r\n\r\n",
	}
	for _, in := range ok {
		if whole, _ := scanAll([]byte(in), len(in)); !whole {
			t.Errorf("refused %q", in)
		}
		if single, _ := scanAll([]byte(in), 1); !single {
			t.Errorf("refused %q fed byte by byte", in)
		}
	}
	for _, in := range bad {
		if whole, _ := scanAll([]byte(in), len(in)); whole {
			t.Errorf("accepted %q", in)
		}
		if single, _ := scanAll([]byte(in), 1); single {
			t.Errorf("accepted %q fed byte by byte", in)
		}
	}
}

// scanAll feeds b to a strictConn's scanner in pieces of n bytes and
// returns whether it was accepted, and how many bytes were let through.
func scanAll(b []byte, n int) (bool, int) {
	ok, at, _ := scan(b, n, false)
	return ok, at
}

// scan feeds b as scanAll does, taking lines byte by byte when bytewise
// (the reference the runs are held to); it also returns the last line
// the scanner kept.
func scan(b []byte, n int, bytewise bool) (bool, int, string) {
	c := &strictConn{bytewise: bytewise}
	c.st.lineStart = true
	passed := 0
	for len(b) > 0 {
		k := min(n, len(b))
		ok, at := c.scan(b[:k])
		if !ok {
			return false, passed + at, string(c.st.line)
		}
		passed += k
		b = b[k:]
	}
	return true, passed, string(c.st.line)
}

// FuzzStrictFraming: the scanner never panics; its verdict and the
// bytes it lets through do not depend on how reads split the stream; and
// taking a line's bytes in runs decides, lets through and keeps exactly
// what taking them one by one does.
func FuzzStrictFraming(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), 3)
	f.Add([]byte("GET / HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\n\n"), 1)
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), 7)
	f.Add([]byte("GET / HTTP/1.1\r\nX: "+strings.Repeat("a", 300)+"\r\nContent-Length: 1"+strings.Repeat(" ", 250)+"\r\n\r\nx"), 100)
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\nb\r\n\r\n"), 5)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n <= 0 || n > len(b) {
			n = len(b) + 1
		}
		ok1, at1, line1 := scan(b, len(b)+1, false)
		ok2, at2, _ := scan(b, n, false)
		if ok1 != ok2 || at1 != at2 {
			t.Fatalf("whole: %v at %d; in pieces of %d: %v at %d", ok1, at1, n, ok2, at2)
		}
		ok3, at3, line3 := scan(b, n, true)
		if ok1 != ok3 || at1 != at3 || line1 != line3 {
			t.Fatalf("in runs: %v at %d, line %q; byte by byte: %v at %d, line %q", ok1, at1, line1, ok3, at3, line3)
		}
	})
}
