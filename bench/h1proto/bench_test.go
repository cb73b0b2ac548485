package h1proto

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"minimesh/dataplane/edge"
	"minimesh/dataplane/h1"
)

// The child process: H1PROTO_SERVE names the server, H1PROTO_CERT and
// H1PROTO_KEY its certificate's files.
const (
	envServe = "H1PROTO_SERVE"
	envCert  = "H1PROTO_CERT"
	envKey   = "H1PROTO_KEY"
	// H1PROTO_ROUNDS: rounds, each running every server once in turn
	// (interleaved, so that the machine's other load falls on all); 1 if
	// unset.
	envRounds = "H1PROTO_ROUNDS"
)

// kinds: fasthttp-adaptor is fasthttp serving the same http.Handler
// through fasthttpadaptor, as the proxy's handler would be without a
// rewrite for fasthttp's RequestCtx.
var kinds = []string{"nethttp", "h1", "fasthttp", "fasthttp-adaptor"}

func TestMain(m *testing.M) {
	if kind := os.Getenv(envServe); kind != "" {
		if err := child(kind); err != nil {
			fmt.Fprintln(os.Stderr, "h1proto child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	printTable(os.Stdout)
	os.Exit(code)
}

// answerBody is the fixed 100-byte answer.
var answerBody = bytes.Repeat([]byte("0123456789"), 10)

// child serves kind behind edge's TLS listener and framing checker on
// 127.0.0.1:0, prints "addr HOST:PORT", then answers each "stats" line
// on its stdin with its counters, until stdin ends.
func child(kind string) error {
	cert, err := tls.LoadX509KeyPair(os.Getenv(envCert), os.Getenv(envKey))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tl := edge.NewTLSListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		NextProtos: []string{"http/1.1"}}, edge.TLSOptions{Timeout: 5 * time.Second, MaxPending: 64,
		OnFail: func(c net.Conn, err error) { fmt.Fprintln(os.Stderr, "handshake:", err) }})
	sl := edge.Strict(tl)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(answerBody)
	})
	switch kind {
	case "nethttp":
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
			ErrorLog: slog.NewLogLogger(slog.NewTextHandler(os.Stderr, nil), slog.LevelError)}
		go func() { _ = srv.Serve(sl) }()
	case "h1":
		s := &h1.Server{Handler: h}
		go func() {
			for {
				c, err := sl.Accept()
				if err != nil {
					return
				}
				go s.ServeConn(c)
			}
		}()
	case "fasthttp", "fasthttp-adaptor":
		fh := func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/plain")
			ctx.SetBody(answerBody)
		}
		if kind == "fasthttp-adaptor" {
			fh = fasthttpadaptor.NewFastHTTPHandler(h)
		}
		s := &fasthttp.Server{
			Handler:               fh,
			NoDefaultServerHeader: true, ReadTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
			ReadBufferSize: 4096, WriteBufferSize: 4096,
		}
		go func() { _ = s.Serve(sl) }()
	default:
		return fmt.Errorf("%s=%q: want one of %v", envServe, kind, kinds)
	}
	fmt.Printf("addr %s\n", ln.Addr())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() != "stats" {
			return fmt.Errorf("unknown command %q", sc.Text())
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return err
		}
		fmt.Printf("stats %d %d %d %d %d\n", ms.Mallocs, ms.TotalAlloc,
			ru.Utime.Nano()+ru.Stime.Nano(), ru.Nvcsw, ru.Nivcsw)
	}
	return sc.Err()
}

// counters are a child's, from its "stats" answer.
type counters struct{ mallocs, bytes, cpuNS, vcsw, ivcsw int64 }

// server is a running child and the client's connections to it.
type server struct {
	kind  string
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	addr  string
	cfg   *tls.Config
	conns chan *clientConn
}

type clientConn struct {
	c  *tls.Conn
	br *bufio.Reader
}

func startServer(b *testing.B, kind, certFile, keyFile string, pool *x509.CertPool) *server {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envServe+"="+kind, envCert+"="+certFile, envKey+"="+keyFile)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s := &server{kind: kind, cmd: cmd, in: in, out: bufio.NewReader(outPipe),
		cfg: &tls.Config{RootCAs: pool, ServerName: "h1proto.test", MinVersion: tls.VersionTLS13,
			NextProtos: []string{"http/1.1"}, ClientSessionCache: tls.NewLRUClientSessionCache(64)}}
	b.Cleanup(func() {
		_ = in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := s.out.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "addr ")
	if err != nil || !ok {
		b.Fatalf("%s: child's first line %q: %v", kind, line, err)
	}
	s.addr = addr
	return s
}

func (s *server) stats(b *testing.B) counters {
	b.Helper()
	if _, err := io.WriteString(s.in, "stats\n"); err != nil {
		b.Fatal(err)
	}
	line, err := s.out.ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(line)
	if len(f) != 6 || f[0] != "stats" {
		b.Fatalf("%s: stats %q", s.kind, line)
	}
	var n [5]int64
	for i := range n {
		if n[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			b.Fatal(err)
		}
	}
	return counters{n[0], n[1], n[2], n[3], n[4]}
}

// dialAll opens the keep-alive connections, reused by every round.
func (s *server) dialAll(b *testing.B, n int) {
	s.conns = make(chan *clientConn, n)
	for range n {
		c, err := tls.Dial("tcp", s.addr, s.cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		s.conns <- &clientConn{c: c, br: bufio.NewReaderSize(c, 4096)}
	}
}

const request = "GET /bench?x=1 HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"

// result is one round's numbers, per request.
type result struct {
	n                                     int
	ns, cpuNS, allocs, bytes, vcsw, ivcsw float64
}

var (
	resultsMu sync.Mutex
	results   = map[string][]result{}
)

// BenchmarkServers: the same fixed 100-byte answer, over TLS 1.3 behind
// edge.Strict, from net/http's server, dataplane/h1's and fasthttp's,
// each in a child process, to 64 keep-alive connections (the client is
// this process, allocation-free). ns/op is wall time per request; srv-*
// are the server process's CPU time, allocations and context switches
// (voluntary + involuntary, getrusage) per request.
func BenchmarkServers(b *testing.B) {
	rounds := 1
	if v := os.Getenv(envRounds); v != "" {
		var err error
		if rounds, err = strconv.Atoi(v); err != nil || rounds < 1 {
			b.Fatalf("%s=%q: want a number of rounds, at least 1", envRounds, v)
		}
	}
	dir := b.TempDir()
	certFile, keyFile, pool := writeCert(b, dir)
	servers := map[string]*server{}
	for _, kind := range kinds {
		servers[kind] = startServer(b, kind, certFile, keyFile, pool)
		servers[kind].dialAll(b, 64)
	}
	for round := range rounds * len(kinds) {
		kind := kinds[round%len(kinds)]
		s := servers[kind]
		b.Run(kind, func(b *testing.B) {
			b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			before := s.stats(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				cc := <-s.conns
				defer func() { s.conns <- cc }()
				req := []byte(request)
				for pb.Next() {
					if _, err := cc.c.Write(req); err != nil {
						b.Error(err)
						return
					}
					if err := readAnswer(cc.br); err != nil {
						b.Errorf("%s: %v", kind, err)
						return
					}
				}
			})
			b.StopTimer()
			after := s.stats(b)
			n := float64(b.N)
			r := result{n: b.N, ns: float64(b.Elapsed().Nanoseconds()) / n,
				cpuNS:  float64(after.cpuNS-before.cpuNS) / n,
				allocs: float64(after.mallocs-before.mallocs) / n,
				bytes:  float64(after.bytes-before.bytes) / n,
				vcsw:   float64(after.vcsw-before.vcsw) / n,
				ivcsw:  float64(after.ivcsw-before.ivcsw) / n}
			b.ReportMetric(r.cpuNS, "srv-cpu-ns/op")
			b.ReportMetric(r.allocs, "srv-allocs/op")
			b.ReportMetric(r.bytes, "srv-B/op")
			b.ReportMetric(r.vcsw, "srv-vcsw/op")
			b.ReportMetric(r.ivcsw, "srv-ivcsw/op")
			resultsMu.Lock()
			results[kind] = append(results[kind], r)
			resultsMu.Unlock()
		})
	}
}

// printTable prints, per server, the median of the rounds with the most
// requests (one per -count), and each as a ratio to net/http's.
func printTable(w io.Writer) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	med := map[string]result{}
	for kind, rs := range results {
		maxN := 0
		for _, r := range rs {
			maxN = max(maxN, r.n)
		}
		var top []result
		for _, r := range rs {
			if r.n == maxN {
				top = append(top, r)
			}
		}
		m := top[0]
		pick := func(get func(result) float64) float64 {
			v := make([]float64, len(top))
			for i, r := range top {
				v[i] = get(r)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		m.ns = pick(func(r result) float64 { return r.ns })
		m.cpuNS = pick(func(r result) float64 { return r.cpuNS })
		m.allocs = pick(func(r result) float64 { return r.allocs })
		m.bytes = pick(func(r result) float64 { return r.bytes })
		m.vcsw = pick(func(r result) float64 { return r.vcsw })
		m.ivcsw = pick(func(r result) float64 { return r.ivcsw })
		med[kind] = m
		results[kind] = top
	}
	base, hasBase := med["nethttp"]
	ratio := func(v, b float64) string {
		if !hasBase || b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", v/b)
	}
	fmt.Fprintf(w, "\nTLS 1.3 behind edge.Strict, 64 connections, 100-byte answer; median of %d rounds; "+
		"all but ns/op are the server process's (context switches: voluntary, involuntary)\n\n", len(results["nethttp"]))
	fmt.Fprintln(w, "| server | requests/round | ns/op (wall) | server CPU µs/req | allocs/req | B/req | vol. ctx sw/req | invol. ctx sw/req | ns/op vs net/http | CPU vs net/http |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, kind := range kinds {
		m, ok := med[kind]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %.2f | %.1f | %.0f | %.3f | %.3f | %s | %s |\n", kind, m.n, m.ns, m.cpuNS/1000,
			m.allocs, m.bytes, m.vcsw, m.ivcsw, ratio(m.ns, base.ns), ratio(m.cpuNS, base.cpuNS))
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
			return fmt.Errorf("answer %q", line)
		}
		first = false
		if len(line) == 2 {
			break
		}
		if len(line) > 16 && bytes.EqualFold(line[:16], []byte("Content-Length: ")) {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(line[16:])))
		}
	}
	if n != len(answerBody) {
		return fmt.Errorf("Content-Length %d", n)
	}
	_, err := br.Discard(n)
	return err
}

// writeCert writes a fresh self-signed ECDSA P-256 certificate and its key
// (0600) into dir.
func writeCert(b *testing.B, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"h1proto.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		b.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	return certFile, keyFile, pool
}
