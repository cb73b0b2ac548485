package h1

import (
	"net/url"
	"reflect"
	"strconv"
	"testing"
)

var targetSeeds = []string{
	"/", "/a/b", "/a/b?x=1&y=2", "/a?", "/a??", "/a?b?", "/a%20b", "/a b", "/a*b", "/a!b?c",
	"//host/path", "/a?q=\x7f", "/a\x00", "/é", "/a?é#frag", "/a#frag", "*", "http://h/p", "h:80",
	"/$&+,/:;=@-_.~", "/a?%zz", "/a%zz",
}

// FuzzOriginForm: whatever originForm takes, url.ParseRequestURI reads
// as the same URL.
func FuzzOriginForm(f *testing.F) {
	for _, s := range targetSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		var u url.URL
		if !originForm(target, &u) {
			return
		}
		want, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("originForm took %q, which net/url refuses: %v", target, err)
		}
		if !reflect.DeepEqual(&u, want) {
			t.Fatalf("URL differs for %q:\nours     %#v\nnet/url  %#v", target, u, *want)
		}
	})
}

// TestOriginFormTakesCommonTargets: the fast path is taken for what
// clients send most, and left to net/url for the rest.
func TestOriginFormTakesCommonTargets(t *testing.T) {
	for _, s := range []string{"/", "/api/v1/items", "/a/b?x=1&y=2", "/search?q=caf%C3%A9&page=2", "/p;v=1/@me:x"} {
		var u url.URL
		if !originForm(s, &u) {
			t.Errorf("originForm declined %q", s)
		}
	}
	for _, s := range []string{"", "*", "http://h/p", "/a%20b", "/a b", "/a?", "/a?\x01", "/a(b)", "/é"} {
		var u url.URL
		if originForm(s, &u) {
			t.Errorf("originForm took %q", s)
		}
	}
}

// TestParseHeadAllocations: a small request's URL and header values live
// in its room: parsing it allocates the head's string and the header map
// only (the map's header and its one group of slots).
func TestParseHeadAllocations(t *testing.T) {
	head := "GET /api/items?page=2 HTTP/1.1\r\nHost: example\r\nUser-Agent: t\r\nAccept: */*\r\n"
	for i := range 4 {
		head += "X-F" + strconv.Itoa(i) + ": v\r\n"
	}
	head += "\r\n"
	b := []byte(head)
	var rm room
	var p parsed
	n := testing.AllocsPerRun(100, func() {
		if err := parseHead(b, &p, &rm); err != nil {
			t.Fatal(err)
		}
	})
	if p.url != &rm.url || p.url.Path != "/api/items" || p.url.RawQuery != "page=2" || p.header.Get("X-F3") != "v" {
		t.Fatalf("parsed %+v, URL %+v", p, p.url)
	}
	if n > 3 {
		t.Errorf("parseHead allocates %.0f times for a request of 7 fields, want 3: the head's string and the map", n)
	}
}
