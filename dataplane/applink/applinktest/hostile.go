// Package applinktest holds a hostile app for tests of the app link and
// of the listeners in front of it: a real TCP server that misbehaves on
// purpose (extra answers, doubtful framing, 1xx storms, silence).
package applinktest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// HostileApp is a real TCP app that misbehaves on purpose, by path; on
// /ok?id=N it answers "ok N" correctly, so that a request after a
// misbehaving one shows whether the connection was poisoned.
type HostileApp struct {
	ln    net.Listener
	Conns atomic.Int64 // connections accepted
	// Wrote is told the path of an answer written only in part, before
	// the app waits for the connection to end; Cut is told it ended.
	Wrote, Cut chan string
	// Late releases /late-extra's unasked second answer; LateDone is
	// told it was written.
	Late, LateDone chan struct{}
	wg             sync.WaitGroup
}

// Forged is a whole response a hostile app leaves after its answer: read
// as the next request's answer, it is cross-talk.
const Forged = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"

func NewHostileApp(t testing.TB) *HostileApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &HostileApp{ln: ln, Wrote: make(chan string, 16), Cut: make(chan string, 16),
		Late: make(chan struct{}), LateDone: make(chan struct{}, 1)}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			conn, err := a.ln.Accept()
			if err != nil {
				return
			}
			a.Conns.Add(1)
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				defer conn.Close()
				a.serve(conn)
			}()
		}
	}()
	t.Cleanup(func() {
		a.ln.Close()
		a.wg.Wait()
	})
	return a
}

func (a *HostileApp) Addr() string { return a.ln.Addr().String() }

func (a *HostileApp) serve(conn net.Conn) {
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		// waitEnd holds the connection open until the peer ends it.
		waitEnd := func(path string) {
			a.Wrote <- path
			_, _ = io.Copy(io.Discard, br)
			a.Cut <- path
		}
		switch req.URL.Path {
		case "/ok":
			body := "ok " + req.URL.Query().Get("id")
			fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		case "/extra": // a second answer nobody asked for
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"+Forged)
		case "/short-cl": // Content-Length shorter than the body
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"+Forged)
		case "/head-body": // a HEAD answered with a body
			fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(Forged), Forged)
		case "/late-extra": // the unasked answer comes once the first was read
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			<-a.Late
			_, _ = io.WriteString(conn, Forged)
			a.LateDone <- struct{}{}
		case "/te-cl": // both framings: chunked wins, the connection must not be reused
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
		case "/http10-te": // Transfer-Encoding in HTTP/1.0: faulty framing
			_, _ = io.WriteString(conn, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc")
		case "/close-mid-headers":
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Le")
			return
		case "/close-mid-body":
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
			return
		case "/long-cl": // Content-Length longer than the body, and silence
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
			waitEnd(req.URL.Path)
			return
		case "/1xx-storm":
			_, _ = io.WriteString(conn, strings.Repeat("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", 300)+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		case "/slow-headers": // nothing until the proxy gives up
			waitEnd(req.URL.Path)
			return
		default:
			return
		}
	}
}
