package h1_test

import (
	"bufio"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"minimesh/dataplane/h1"
)

// WriteHeaderLines answers what WriteHeader answers for the same fields in
// the header map and the same body (fields in another order aside): the
// Content-Length, Content-Type sniffed only without one, Date added only
// without one, Connection: close when the request asked.
func TestWriteHeaderLinesAsWriteHeader(t *testing.T) {
	const date = "Sat, 05 Dec 2026 12:00:00 GMT"
	cases := []struct {
		name    string
		fields  [][2]string
		body    string
		hasType bool
		hasDate bool
	}{
		{"typed and dated", [][2]string{{"Content-Type", "text/plain"}, {"Date", date}, {"X-A", "1"}}, "hello", true, true},
		{"sniffed", [][2]string{{"Date", date}, {"X-A", "1"}, {"X-A", "2"}}, "<html>hi</html>", false, true},
		{"empty body", [][2]string{{"Date", date}, {"Content-Type", ""}}, "", true, true},
	}
	addr, cfg := serveH1(t, &h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tc := cases[int(r.URL.Path[len(r.URL.Path)-1]-'0')]
		if strings.HasPrefix(r.URL.Path, "/map") {
			for _, f := range tc.fields {
				w.Header().Add(f[0], f[1])
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(tc.body)))
			w.WriteHeader(201)
		} else {
			var lines []byte
			for _, f := range tc.fields {
				lines = append(lines, f[0]+": "+f[1]+"\r\n"...)
			}
			w.(h1.LinesWriter).WriteHeaderLines(201, lines, int64(len(tc.body)), tc.hasType, tc.hasDate)
		}
		_, _ = io.WriteString(w, tc.body)
	})})
	head := func(br *bufio.Reader) []string {
		t.Helper()
		var lines []string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if l == "\r\n" {
				break
			}
			lines = append(lines, l)
		}
		slices.Sort(lines)
		return lines
	}
	for i, tc := range cases {
		for _, closeIt := range []bool{false, true} {
			var got [2][]string
			var bodies [2]string
			for j, path := range []string{"/map", "/lines"} {
				c, br, _ := dial(t, addr, cfg)
				req := "GET " + path + strconv.Itoa(i) + " HTTP/1.1\r\nHost: a\r\n"
				if closeIt {
					req += "Connection: close\r\n"
				}
				_, _ = io.WriteString(c, req+"\r\n")
				got[j] = head(br)
				b := make([]byte, len(tc.body))
				_, _ = io.ReadFull(br, b)
				bodies[j] = string(b)
			}
			if !slices.Equal(got[0], got[1]) || bodies[0] != bodies[1] {
				t.Errorf("%s (close %v):\nmap   %q %q\nlines %q %q", tc.name, closeIt, got[0], bodies[0], got[1], bodies[1])
			}
		}
	}
}
