package accesslog

import (
	"bytes"
	"testing"

	meshv1 "minimesh/proto/mesh/v1"
)

// response_flags, a default field, shows only on a response that ended
// abnormally; the line stays valid JSON either way.
func TestResponseFlags(t *testing.T) {
	var out bytes.Buffer
	l := New(Config{Output: &out, Clock: newClock()})
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true, Fields: []string{"status", "response_flags", "path"}})); err != nil {
		t.Fatal(err)
	}
	e := fullEntry()
	l.Log(e)
	e.ResponseFlags = "UC"
	l.Log(e)
	want := `{"status":201,"path":"/orders/42"}` + "\n" + `{"status":201,"response_flags":"UC","path":"/orders/42"}` + "\n"
	if out.String() != want {
		t.Fatalf("lines:\n%s\nwant:\n%s", out.String(), want)
	}
	lines(t, out.Bytes())

	out.Reset()
	if err := l.Apply(accessLog(&meshv1.AccessLogSpec{Enabled: true})); err != nil {
		t.Fatal(err)
	}
	l.Log(e)
	if got := lines(t, out.Bytes()); len(got) != 1 || got[0]["response_flags"] != "UC" {
		t.Fatalf("default fields: %s", out.String())
	}
}
