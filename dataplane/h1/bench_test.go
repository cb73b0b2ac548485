package h1_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"minimesh/dataplane/h1"
)

// BenchmarkServer: one keep-alive request/answer over loopback TCP, the
// same handler behind net/http's server and behind h1. The client is a
// few lines that allocate nothing, so allocs/op are the server's.
// Compare the two in one run: ns/op, allocs/op (64 connections on two
// cores).
func BenchmarkServer(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		_, _ = io.WriteString(w, "hello, world\n")
	})
	for _, bc := range []struct {
		name  string
		serve func(net.Listener)
	}{
		{"nethttp", func(ln net.Listener) { _ = (&http.Server{Handler: h}).Serve(ln) }},
		{"h1", serveH1Bench(&h1.Server{Handler: h})},
		// The watch for a client gone off: what its timer costs the others.
		{"h1-nowatch", serveH1Bench(&h1.Server{Handler: h, WatchAfter: -1})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go bc.serve(ln)
			b.ReportAllocs()
			b.SetParallelism(32) // 64 connections on 2 cores, as the side-by-side bench
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				req := []byte("GET /bench?x=1 HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Request-Id: 1234\r\n\r\n")
				br := bufio.NewReaderSize(c, 4096)
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if err := readAnswer(br); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func serveH1Bench(s *h1.Server) func(net.Listener) {
	return func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.ServeConn(c)
		}
	}
}

// readAnswer reads one answer with a Content-Length, allocating nothing.
func readAnswer(br *bufio.Reader) error {
	n := -1
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if first && !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
			return io.ErrUnexpectedEOF
		}
		first = false
		if len(line) == 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if n < 0 {
		return io.ErrUnexpectedEOF
	}
	_, err := br.Discard(n)
	return err
}
