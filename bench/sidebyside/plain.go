package main

// The plain-HTTP prototypes (-plain): two minimal one-hop proxies that do
// the same byte work, one on a goroutine per connection through Go's
// netpoller (the shape of mesh-proxy's data path), one on an epoll event
// loop per core that owns its sockets (nginx's shape), measured beside
// nginx doing the same without TLS; and the goroutine one behind TLS, in
// one process and as a worker process per core (nginx's process model).
// They answer one question for issue 22: how much of the gap to nginx is
// the goroutine-per-connection model itself. They are not proxies to
// deploy: a request with a body, a response without Content-Length or
// larger than the buffer closes the connection.

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
)

const (
	plainGoroutines = "go goroutines (plain)"
	tlsGoroutines   = "go goroutines (TLS)"
	// tlsProcs is tlsGoroutines as nginx runs: a worker process per core,
	// each with one P (GOMAXPROCS=1) and its own listener on the same
	// port (SO_REUSEPORT), so no hand-off crosses threads of one process.
	tlsProcs   = "go goroutines (TLS, a process per core)"
	plainLoop  = "go event loop (plain)"
	plainNginx = "nginx (plain)"
	// plainBuf bounds a request head and a whole response.
	plainBuf = 16 << 10
)

var crlfcrlf = []byte("\r\n\r\n")

// headEnd is the length of the head (through its blank line) at the start
// of b, or -1 while it is incomplete.
func headEnd(b []byte) int {
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		return -1
	}
	return i + len(crlfcrlf)
}

// headerValue is the value of the first field named name (any case) in
// head, and whether there is one.
func headerValue(head []byte, name string) ([]byte, bool) {
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			return bytes.TrimSpace(v), true
		}
	}
	return nil, false
}

// requestHasBody: the prototypes forward bodiless requests only.
func requestHasBody(head []byte) bool {
	_, cl := headerValue(head, "Content-Length")
	_, te := headerValue(head, "Transfer-Encoding")
	return cl || te
}

// responseLength is the whole response's length (head and body) given its
// head, or -1 when it has no usable Content-Length or does
// not fit plainBuf.
func responseLength(head []byte) int {
	v, ok := headerValue(head, "Content-Length")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 || len(head)+n > plainBuf {
		return -1
	}
	return len(head) + n
}

// exchange is one request/response state machine, shared by both
// prototypes so they do the same work: in holds the client's bytes, resp
// the app's.
type exchange struct {
	in    []byte
	resp  []byte
	total int // the response's length once its head is read, else -1
}

func newExchange() *exchange {
	return &exchange{in: make([]byte, 0, plainBuf), resp: make([]byte, 0, plainBuf), total: -1}
}

// request returns the next whole request head in in (nil: read more) and
// whether the connection must close (too large, or a body).
func (x *exchange) request() (head []byte, bad bool) {
	e := headEnd(x.in)
	if e < 0 {
		return nil, len(x.in) == cap(x.in)
	}
	if requestHasBody(x.in[:e]) {
		return nil, true
	}
	return x.in[:e], false
}

// sent drops the request head of length n from in.
func (x *exchange) sent(n int) {
	x.in = x.in[:copy(x.in, x.in[n:])]
}

// response reports whether resp holds the whole response, and whether
// the connection must close.
func (x *exchange) response() (done, bad bool) {
	if x.total < 0 {
		e := headEnd(x.resp)
		if e < 0 {
			return false, len(x.resp) == cap(x.resp)
		}
		if x.total = responseLength(x.resp[:e]); x.total < 0 {
			return false, true
		}
	}
	if len(x.resp) > x.total {
		return false, true // the app sent more than one answer
	}
	return len(x.resp) == x.total, false
}

// answered resets resp for the next response.
func (x *exchange) answered() {
	x.resp = x.resp[:0]
	x.total = -1
}

// runPlain runs one of the prototypes as a child process of the bench:
// `sidebyside plain-goroutines|plain-loop LISTEN APP`, or
// `sidebyside plain-goroutines-tls LISTEN APP CERT KEY` (TLS 1.3 from the
// client, as the nginx row), until SIGTERM.
func runPlain(kind, listen, app string, certKey ...string) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	if path := os.Getenv("SIDEBYSIDE_CPUPROFILE"); path != "" && kind == "plain-goroutines-tls" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	stop := make(chan struct{})
	errc := make(chan error, 1)
	switch kind {
	case "plain-goroutines":
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		go func() { errc <- serveGoroutines(ln, app) }()
	case "plain-goroutines-tls":
		if len(certKey) != 2 {
			return fmt.Errorf("%s needs CERT and KEY", kind)
		}
		ln, err := tlsListener(listen, certKey[0], certKey[1])
		if err != nil {
			return err
		}
		go func() { errc <- serveGoroutines(ln, app) }()
	case "plain-goroutines-tls-worker":
		if len(certKey) != 2 {
			return fmt.Errorf("%s needs CERT and KEY", kind)
		}
		ln, err := tlsReusePortListener(listen, certKey[0], certKey[1])
		if err != nil {
			return err
		}
		os.Stdout.Write([]byte{'\n'}) // listening: the parent may go on
		go func() { errc <- serveGoroutines(ln, app) }()
	case "plain-goroutines-tls-procs":
		if len(certKey) != 2 {
			return fmt.Errorf("%s needs CERT and KEY", kind)
		}
		workers, err := startWorkers(listen, app, certKey[0], certKey[1])
		if err != nil {
			return err
		}
		go func() {
			for _, w := range workers {
				w.Wait()
			}
			errc <- fmt.Errorf("%s: a worker exited", kind)
		}()
	case "plain-loop":
		go func() { errc <- serveLoops(listen, app, stop) }()
	default:
		return fmt.Errorf("unknown prototype %q", kind)
	}
	select {
	case <-sig:
		close(stop)
		return nil
	case err := <-errc:
		return err
	}
}

// tlsListener terminates TLS 1.3 with the certificate and key files.
func tlsListener(listen, certFile, keyFile string) (net.Listener, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return tls.Listen("tcp", listen, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
}

// tlsReusePortListener is tlsListener on a socket with SO_REUSEPORT
// (plainloop.go's), so each worker has its own accept queue on the port.
func tlsReusePortListener(listen, certFile, keyFile string) (net.Listener, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	fd, err := reusePortListener(listen)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}), nil
}

// startWorkers starts a plain-goroutines-tls-worker per core, each with
// GOMAXPROCS=1, and returns once every one of them listens.
func startWorkers(listen, app, certFile, keyFile string) ([]*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var workers []*exec.Cmd
	for range runtime.NumCPU() {
		cmd := exec.Command(self, "plain-goroutines-tls-worker", listen, app, certFile, keyFile)
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		workers = append(workers, cmd)
		if _, err := out.Read(make([]byte, 1)); err != nil {
			return nil, fmt.Errorf("worker %d did not listen: %w", len(workers), err)
		}
	}
	return workers, nil
}

// serveGoroutines is the netpoller prototype: a goroutine per client
// connection, each with its own app connection, blocking reads and
// writes.
func serveGoroutines(ln net.Listener, app string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			a, err := net.Dial("tcp", app)
			if err != nil {
				return
			}
			defer a.Close()
			proxyGoroutine(c, a)
		}()
	}
}

func proxyGoroutine(c, a net.Conn) {
	x := newExchange()
	for {
		head, bad := x.request()
		for head == nil && !bad {
			n, err := c.Read(x.in[len(x.in):cap(x.in)])
			if err != nil {
				return
			}
			x.in = x.in[:len(x.in)+n]
			head, bad = x.request()
		}
		if bad {
			return
		}
		if _, err := a.Write(head); err != nil {
			return
		}
		x.sent(len(head))
		for {
			done, bad := x.response()
			if bad {
				return
			}
			if done {
				break
			}
			n, err := a.Read(x.resp[len(x.resp):cap(x.resp)])
			if err != nil {
				return
			}
			x.resp = x.resp[:len(x.resp)+n]
		}
		if _, err := c.Write(x.resp); err != nil {
			return
		}
		x.answered()
	}
}

// plainTarget starts one prototype (kind as runPlain takes it) in front of
// the app.
func (e *env) plainTarget(kind, name string) (*target, error) {
	scheme, args := "http", []string{}
	if strings.HasSuffix(kind, "-tls") || strings.HasSuffix(kind, "-tls-procs") {
		scheme, args = "https", []string{e.certs.ServerCert, e.certs.ServerKey}
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var env []string
	if e.cpuProfiles != "" {
		env = append(env, "SIDEBYSIDE_CPUPROFILE="+filepath.Join(e.cpuProfiles, kind+".pprof"))
	}
	c, err := e.p.start(kind, env, self, append([]string{kind, addr, e.app}, args...)...)
	if err != nil {
		return nil, err
	}
	url := scheme + "://" + addr + "/"
	if err := e.verify(c, name, url); err != nil {
		return nil, err
	}
	return &target{name: name, shape: "one hop", url: url, hops: [][]int{descendants(c.pid())}, main: c, mains: []*child{c}}, nil
}

// nginxPlain is nginx one hop as the nginx row, without TLS.
func (e *env) nginxPlain() (*target, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := e.nginxHead("nginx-plain") + fmt.Sprintf(`    upstream app { server %s; keepalive 256; keepalive_requests 1000000; }
    server {
        listen %s;
%s    }
}
`, e.app, addr, nginxProxyToApp)
	c, err := e.nginx("nginx-plain", conf)
	if err != nil {
		return nil, err
	}
	url := "http://" + addr + "/"
	if err := e.verify(c, plainNginx, url); err != nil {
		return nil, err
	}
	return &target{name: plainNginx, shape: "one hop", url: url, hops: [][]int{descendants(c.pid())}, main: c, mains: []*child{c}}, nil
}
