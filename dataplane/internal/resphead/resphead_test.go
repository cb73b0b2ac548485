package resphead

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

var seeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\nX-A: 2\r\n\r\nhelloNEXT",
	"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 3\r\n\r\nabc",
	"HTTP/1.1 200 \r\nContent-Length: 3\r\n\r\nabc",
	"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length:  007 \r\n\r\n1234567",
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
	"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Tab:\tv\t\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 1\r\nx-connection: 1\r\nPragmas: 1\r\n\r\nx",
	// Declined: each is one of the forms Parse leaves to net/http.
	"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 204 No Content\r\nContent-Length: 1\r\n\r\n",
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 1\r\n\r\n",
	"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTRANSFER-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nCONNECTION: close\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX: 1\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
	"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nTrailer: X\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n folded\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX: caf\xc3\xa9\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX: 1\r\n\r\nno length",
	"HTTP/1.1 2000 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 20 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 600 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1  200 OK\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\n: empty\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nX : space\r\nContent-Length: 1\r\n\r\nx",
	"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",
}

// accepted is how many of seeds, from the first, Parse takes.
const accepted = 9

var getReq, _ = http.NewRequest(http.MethodGet, "http://app/", nil)

// reader buffers all of data, as a response whose head arrived whole.
func reader(data []byte) *bufio.Reader {
	br := bufio.NewReaderSize(bytes.NewReader(data), max(16, len(data)))
	_, _ = br.Peek(len(data))
	return br
}

// readAll reads a body to its end and classes the error as ReadAll's
// callers see it (nil or unexpected EOF, which both readers return).
func readAll(r io.Reader) ([]byte, string) {
	b, err := io.ReadAll(r)
	switch {
	case err == nil:
		return b, "ok"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return b, "unexpected EOF"
	}
	return b, err.Error()
}

// FuzzParseVsNetHTTP: whatever Parse accepts, net/http's ReadResponse
// accepts as the same response (status, protocol, header fields and
// values in order, length, Close, no transfer coding or trailers) with the
// same body bytes and the same bytes left after it; whatever Parse
// declines, it leaves unread.
func FuzzParseVsNetHTTP(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	var slot Slot // lent to every other input: a lent slot reads the same
	n := 0
	f.Fuzz(func(t *testing.T, data []byte) {
		ours := reader(data)
		var lent *Slot
		if n++; n%2 == 0 {
			lent = &slot
		}
		resp, ok := Parse(ours, getReq, nil, lent)
		if !ok {
			if rest, _ := io.ReadAll(ours); !bytes.Equal(rest, data) {
				t.Fatalf("declined but consumed bytes: %q left of %q", rest, data)
			}
			return
		}
		theirs := reader(data)
		want, err := http.ReadResponse(theirs, getReq)
		if err != nil {
			t.Fatalf("Parse accepted what net/http refuses (%v): %q", err, data)
		}
		if resp.Status != want.Status || resp.StatusCode != want.StatusCode || resp.Proto != want.Proto ||
			resp.ProtoMajor != want.ProtoMajor || resp.ProtoMinor != want.ProtoMinor ||
			resp.ContentLength != want.ContentLength || resp.Close != want.Close ||
			len(want.TransferEncoding) != 0 || len(want.Trailer) != 0 || resp.Request != want.Request {
			t.Fatalf("response differs for %q:\nours %+v\nnet/http %+v", data, resp, want)
		}
		if !reflect.DeepEqual(resp.Header, want.Header) {
			t.Fatalf("header differs for %q:\nours %q\nnet/http %q", data, resp.Header, want.Header)
		}
		if (resp.Body == http.NoBody) != (want.Body == http.NoBody) {
			t.Fatalf("NoBody differs for %q", data)
		}
		gotBody, gotErr := readAll(resp.Body)
		wantBody, wantErr := readAll(want.Body)
		if !bytes.Equal(gotBody, wantBody) || gotErr != wantErr {
			t.Fatalf("body differs for %q: ours %q (%s), net/http %q (%s)", data, gotBody, gotErr, wantBody, wantErr)
		}
		gotRest, _ := io.ReadAll(ours)
		wantRest, _ := io.ReadAll(theirs)
		if !bytes.Equal(gotRest, wantRest) {
			t.Fatalf("bytes after the body differ for %q: ours %q, net/http %q", data, gotRest, wantRest)
		}
	})
}

// TestParse: the common forms are taken (so the fast path is used at all),
// each declined form is declined, and a HEAD request or a head not yet
// whole in the buffer is left to net/http.
func TestParse(t *testing.T) {
	for _, s := range seeds[:accepted] {
		if _, ok := Parse(reader([]byte(s)), getReq, nil, nil); !ok {
			t.Errorf("declined %q", s)
		}
	}
	for _, s := range seeds[accepted:] {
		if _, ok := Parse(reader([]byte(s)), getReq, nil, nil); ok {
			t.Errorf("accepted %q", s)
		}
	}
	// maxFields fields are taken, one more is left to net/http.
	many := func(n int) string {
		return "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-F: v\r\n", n-1) + "Content-Length: 1\r\n\r\nx"
	}
	if resp, ok := Parse(reader([]byte(many(maxFields))), getReq, nil, nil); !ok || len(resp.Header["X-F"]) != maxFields-1 {
		t.Errorf("a head of %d fields: taken %v", maxFields, ok)
	}
	if _, ok := Parse(reader([]byte(many(maxFields+1))), getReq, nil, nil); ok {
		t.Errorf("a head of %d fields was taken", maxFields+1)
	}
	head, _ := http.NewRequest(http.MethodHead, "http://app/", nil)
	if _, ok := Parse(reader([]byte(seeds[0])), head, nil, nil); ok {
		t.Error("accepted the answer to a HEAD request")
	}
	part := bufio.NewReader(io.MultiReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-"), strings.NewReader("Length: 1\r\n\r\nx")))
	_, _ = part.Peek(1)
	if _, ok := Parse(part, getReq, nil, nil); ok {
		t.Error("accepted a head not whole in the buffer")
	}
	if b, _ := io.ReadAll(part); string(b) != "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx" {
		t.Errorf("a declined head was consumed: %q left", b)
	}
}

// TestBodyAllocations: the fast path allocates a handful of objects per
// response where net/http's ReadResponse allocates more (its reader,
// transfer state and body): the reason it exists.
func TestBodyAllocations(t *testing.T) {
	data := []byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sat, 05 Dec 2026 12:00:00 GMT\r\n\r\n" + strings.Repeat("x", 100))
	src := bytes.NewReader(data)
	br := bufio.NewReader(src)
	buf := make([]byte, 512)
	run := func(read func() (*http.Response, error)) float64 {
		return testing.AllocsPerRun(200, func() {
			src.Reset(data)
			br.Reset(src)
			_, _ = br.Peek(1)
			resp, err := read()
			if err != nil {
				t.Fatal(err)
			}
			for {
				if _, err := resp.Body.Read(buf); err != nil {
					break
				}
			}
		})
	}
	ours := run(func() (*http.Response, error) {
		resp, ok := Parse(br, getReq, nil, nil)
		if !ok {
			return nil, errors.New("declined")
		}
		return resp, nil
	})
	var slot Slot
	lent := run(func() (*http.Response, error) {
		resp, ok := Parse(br, getReq, nil, &slot)
		if !ok {
			return nil, errors.New("declined")
		}
		return resp, nil
	})
	theirs := run(func() (*http.Response, error) { return http.ReadResponse(br, getReq) })
	t.Logf("allocations per response: Parse %.0f, with a lent Slot %.0f, http.ReadResponse %.0f", ours, lent, theirs)
	if ours >= theirs {
		t.Errorf("Parse allocates %.0f per response, net/http %.0f", ours, theirs)
	}
	// The response and its body live in the slot (without one, in one
	// allocation of Parse's).
	if lent != ours-1 {
		t.Errorf("with a lent Slot Parse allocates %.0f per response, without %.0f: want one fewer", lent, ours)
	}
}

// TestDeclineAllocatesNothing: a head Parse leaves to net/http (a chunked
// answer, the commonest) costs it no allocation, since net/http then reads
// the head again.
func TestDeclineAllocatesNothing(t *testing.T) {
	br := reader([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"))
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := Parse(br, getReq, nil, nil); ok {
			t.Fatal("a chunked answer was taken")
		}
	}); n != 0 {
		t.Errorf("a declined head costs %.0f allocations", n)
	}
}

// hopByHop are the fields a proxy drops from an answer (ReverseProxy's
// list).
var hopByHopNames = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// FuzzRawVsNetHTTP: Parse with Fields takes exactly the heads it takes
// without, and its lines are net/http's header map as a proxy passes it
// on: every field but Content-Length and the hop-by-hop ones, names
// canonical, values as net/http has them and in their order per name;
// ContentType is the map's first Content-Type value, HasDate whether it
// has a Date; the length, status and body are net/http's.
func FuzzRawVsNetHTTP(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\ncontent-TYPE: text/html\r\nkeep-alive: timeout=5\r\nUpgrade: h2c\r\nDATE: x\r\nX-a-B: 1\r\nx-A-b: 2\r\nContent-Length: 1\r\n\r\nx"))
	f.Add([]byte("HTTP/1.1 201 Created\r\nContent-Type:\r\nContent-Type: b\r\nTe: x\r\nProxy-Authenticate: y\r\nContent-Length: 0\r\n\r\n"))
	var raw Fields
	f.Fuzz(func(t *testing.T, data []byte) {
		_, mapOK := Parse(reader(data), getReq, nil, nil)
		ours := reader(data)
		resp, ok := Parse(ours, getReq, &raw, nil)
		if ok != mapOK || ok != raw.Taken {
			t.Fatalf("taken with Fields %v (Taken %v), without %v: %q", ok, raw.Taken, mapOK, data)
		}
		if !ok {
			return
		}
		want, err := http.ReadResponse(reader(data), getReq)
		if err != nil {
			t.Fatalf("Parse accepted what net/http refuses (%v): %q", err, data)
		}
		if resp.Header != nil || resp.Status != want.Status || resp.StatusCode != want.StatusCode ||
			resp.ContentLength != want.ContentLength || resp.Close != want.Close {
			t.Fatalf("response differs for %q:\nours %+v\nnet/http %+v", data, resp, want)
		}
		got := http.Header{}
		for line := range strings.SplitSeq(strings.TrimSuffix(string(raw.Lines), "\r\n"), "\r\n") {
			if line == "" && len(raw.Lines) == 0 {
				break
			}
			k, v, ok := strings.Cut(line, ": ")
			if !ok || k != http.CanonicalHeaderKey(k) {
				t.Fatalf("line %q of %q", line, raw.Lines)
			}
			got[k] = append(got[k], v)
		}
		exp := want.Header.Clone()
		exp.Del("Content-Length")
		for _, k := range hopByHopNames {
			exp.Del(k)
		}
		if len(exp) == 0 {
			exp = http.Header{}
		}
		if !reflect.DeepEqual(got, exp) {
			t.Fatalf("fields differ for %q:\nours %q\nnet/http %q", data, got, exp)
		}
		// Header, the map again: net/http's less the hop-by-hop fields.
		exp.Set("Content-Length", strconv.FormatInt(want.ContentLength, 10))
		if h := raw.Header(resp.ContentLength); !reflect.DeepEqual(h, exp) {
			t.Fatalf("Header for %q:\nours %q\nnet/http %q", data, h, exp)
		}
		if vv, has := want.Header["Content-Type"]; has != (raw.ContentType != nil) || has && string(raw.ContentType) != vv[0] {
			t.Fatalf("Content-Type %q, net/http %q", raw.ContentType, vv)
		}
		if _, has := want.Header["Date"]; has != raw.HasDate {
			t.Fatalf("HasDate %v for %q", raw.HasDate, data)
		}
		gotBody, gotErr := readAll(resp.Body)
		wantBody, wantErr := readAll(want.Body)
		if !bytes.Equal(gotBody, wantBody) || gotErr != wantErr {
			t.Fatalf("body differs for %q", data)
		}
	})
}

// TestRawAllocations: with Fields (its buffer grown once) a response
// costs the Response and its body, no header map or strings.
func TestRawAllocations(t *testing.T) {
	data := []byte("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Type: text/plain; charset=utf-8\r\nDate: Sat, 05 Dec 2026 12:00:00 GMT\r\n\r\nx")
	src := bytes.NewReader(data)
	br := bufio.NewReader(src)
	var raw Fields
	n := testing.AllocsPerRun(200, func() {
		src.Reset(data)
		br.Reset(src)
		_, _ = br.Peek(1)
		if _, ok := Parse(br, getReq, &raw, nil); !ok {
			t.Fatal("declined")
		}
	})
	if n > 2 {
		t.Errorf("%.0f allocations per response with Fields, want at most 2", n)
	}
	if string(raw.Lines) != "Content-Type: text/plain; charset=utf-8\r\nDate: Sat, 05 Dec 2026 12:00:00 GMT\r\n" {
		t.Errorf("lines %q", raw.Lines)
	}
}
