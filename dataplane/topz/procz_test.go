package topz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func socketFor(p Process, proto, local string) (Socket, bool) {
	for _, s := range p.Sockets {
		if s.Proto == proto && s.Local == local {
			return s, true
		}
	}
	return Socket{}, false
}

// Inspect of this very process sees the sockets and the file it opened.
func TestInspectSeesSocketsAndFiles(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			conns <- c
		}
		close(conns)
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-conns
	if server == nil {
		t.Fatal("accept failed")
	}
	defer server.Close()

	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	unixPath := filepath.Join(t.TempDir(), "app.sock")
	ul, err := net.Listen("unix", unixPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	var ln6 net.Listener
	if l, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln6 = l
		defer ln6.Close()
	}
	name := filepath.Join(t.TempDir(), "opened.txt")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	c := newCollector(t, Config{})
	p, err := c.Inspect(context.Background(), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != os.Getpid() || p.FDError != "" || p.Truncated {
		t.Fatalf("process %+v", p.Row)
	}
	if s, ok := socketFor(p, "tcp", ln.Addr().String()); !ok || s.State != "LISTEN" || s.Remote != "" {
		t.Errorf("listener %s: %+v %v\nall: %+v", ln.Addr(), s, ok, p.Sockets)
	}
	if s, ok := socketFor(p, "tcp", client.LocalAddr().String()); !ok || s.State != "ESTABLISHED" || s.Remote != ln.Addr().String() {
		t.Errorf("client connection %s: %+v %v", client.LocalAddr(), s, ok)
	}
	accepted := false
	for _, s := range p.Sockets {
		if s.Proto == "tcp" && s.Local == server.LocalAddr().String() && s.Remote == client.LocalAddr().String() && s.State == "ESTABLISHED" {
			accepted = true
		}
	}
	if !accepted {
		t.Errorf("accepted connection %s<-%s not in %+v", server.LocalAddr(), client.LocalAddr(), p.Sockets)
	}
	if s, ok := socketFor(p, "udp", udp.LocalAddr().String()); !ok || s.State != "UNCONN" {
		t.Errorf("udp %s: %+v %v", udp.LocalAddr(), s, ok)
	}
	if s, ok := socketFor(p, "unix", unixPath); !ok || s.State != "LISTEN" || s.Type != "stream" {
		t.Errorf("unix %s: %+v %v", unixPath, s, ok)
	}
	if ln6 != nil {
		if s, ok := socketFor(p, "tcp6", ln6.Addr().String()); !ok || s.State != "LISTEN" {
			t.Errorf("tcp6 %s: %+v %v", ln6.Addr(), s, ok)
		}
	}
	found := false
	for _, of := range p.Files {
		if of.Path == name && of.FD == int(f.Fd()) {
			found = true
		}
		if strings.HasPrefix(of.Path, "socket:") {
			t.Errorf("a socket listed as a file: %+v", of)
		}
	}
	if !found {
		t.Errorf("file %s (fd %d) not in %+v", name, f.Fd(), p.Files)
	}
}

func TestInspectTruncates(t *testing.T) {
	c := newCollector(t, Config{MaxEntries: 2})
	p, err := c.Inspect(context.Background(), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Sockets)+len(p.Files) > 2 || !p.Truncated {
		t.Errorf("%d sockets %d files truncated %v", len(p.Sockets), len(p.Files), p.Truncated)
	}
}

func TestInspectNoProcess(t *testing.T) {
	c := newCollector(t, Config{})
	for _, pid := range []int{0, -1, 1 << 30} {
		if _, err := c.Inspect(context.Background(), pid); !errors.Is(err, ErrNoProcess) {
			t.Errorf("pid %d: %v", pid, err)
		}
	}
}

func TestProczHandler(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	url := serve(t, newCollector(t, Config{}))
	pid := os.Getpid()

	code, ctype, body := getBody(t, fmt.Sprintf("%s/procz/%d?format=json", url, pid), "")
	if code != http.StatusOK || ctype != "application/json" {
		t.Fatalf("%d %s %s", code, ctype, body)
	}
	var p Process
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	if s, ok := socketFor(p, "tcp", ln.Addr().String()); !ok || s.State != "LISTEN" {
		t.Errorf("listener not in JSON: %+v", p.Sockets)
	}
	if !strings.Contains(body, `"pid": `) || !strings.Contains(body, `"rss_bytes"`) {
		t.Errorf("row fields not inline: %s", body[:min(len(body), 300)])
	}

	code, ctype, body = getBody(t, fmt.Sprintf("%s/procz/%d", url, pid), "text/plain")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/plain") {
		t.Fatalf("%d %s", code, ctype)
	}
	if !strings.Contains(body, "SOCKETS") || !strings.Contains(body, ln.Addr().String()) || !strings.Contains(body, "LISTEN") {
		t.Errorf("text:\n%s", body)
	}

	for path, want := range map[string]int{"/procz/abc": 400, "/procz/0": 400, fmt.Sprintf("/procz/%d", 1<<30): 404} {
		if code, _, body := getBody(t, url+path, ""); code != want {
			t.Errorf("%s: %d %q, want %d", path, code, body, want)
		}
	}
}
