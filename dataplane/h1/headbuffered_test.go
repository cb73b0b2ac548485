package h1

import (
	"bufio"
	"strings"
	"testing"
)

// headBuffered: a head through its empty line is whole; CRLFs sent after
// a POST's body, before the head, do not make a part of one whole.
func TestHeadBuffered(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next", true},
		{"GET / HTTP/1.1\r\nHost: a\r\n", false},
		{"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n", false},
		{"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"\r\n", false},
	} {
		br := bufio.NewReader(strings.NewReader(tc.in))
		_, _ = br.Peek(len(tc.in))
		if got := headBuffered(br); got != tc.want {
			t.Errorf("headBuffered(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
