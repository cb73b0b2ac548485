package main

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// serveLoops is the event-loop prototype: one loop per P, each a locked OS
// thread with its own epoll set and its own SO_REUSEPORT listener, as
// nginx runs a worker per core. A loop never parks a goroutine: it waits
// in epoll_wait and handles every ready socket in turn. Closing stop
// ends every loop (and their connections); serveLoops returns when all
// have ended.
func serveLoops(listen, app string, stop <-chan struct{}) error {
	appAddr, err := net.ResolveTCPAddr("tcp4", app)
	if err != nil {
		return err
	}
	n := runtime.GOMAXPROCS(0)
	errc := make(chan error, n)
	var wakes []int
	defer func() {
		for _, w := range wakes {
			unix.Close(w)
		}
	}()
	for range n {
		lfd, err := reusePortListener(listen)
		if err != nil {
			return err
		}
		wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			unix.Close(lfd)
			return err
		}
		wakes = append(wakes, wake)
		go func() {
			runtime.LockOSThread()
			defer unix.Close(lfd)
			errc <- runLoop(lfd, wake, appAddr)
		}()
	}
	wakeAll := func() {
		for _, w := range wakes {
			_, _ = unix.Write(w, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}
	}
	var first error
	for ended := 0; ended < n; {
		select {
		case err := <-errc: // one loop failed (or ended): end them all
			ended++
			first = cmp.Or(first, err)
			wakeAll()
		case <-stop:
			stop = nil
			wakeAll()
		}
	}
	return first
}

func sockaddr(a *net.TCPAddr) *unix.SockaddrInet4 {
	sa := &unix.SockaddrInet4{Port: a.Port}
	copy(sa.Addr[:], a.IP.To4())
	return sa
}

func reusePortListener(listen string) (int, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return -1, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return -1, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, sockaddr(&net.TCPAddr{IP: net.ParseIP(host), Port: p})); err != nil {
		return -1, fmt.Errorf("bind %s: %w", listen, err)
	}
	return fd, unix.Listen(fd, 1024)
}

// loopConn is a client connection and its app connection.
type loopConn struct {
	client, app int
	x           *exchange
	waiting     bool // a request went to the app; its answer is due
}

type loop struct {
	ep    int
	byFD  map[int]*loopConn
	app   *unix.SockaddrInet4
	ready []unix.EpollEvent
}

// runLoop serves lfd's connections until wake is written to.
func runLoop(lfd, wake int, app *net.TCPAddr) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(ep)
	l := &loop{ep: ep, byFD: map[int]*loopConn{}, app: sockaddr(app), ready: make([]unix.EpollEvent, 256)}
	defer func() {
		for _, c := range l.byFD {
			l.close(c)
		}
	}()
	if err := l.watch(lfd); err != nil {
		return err
	}
	if err := l.watch(wake); err != nil {
		return err
	}
	for {
		n, err := unix.EpollWait(ep, l.ready, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range l.ready[:n] {
			fd := int(ev.Fd)
			if fd == wake {
				return nil
			}
			if fd == lfd {
				l.accept(lfd)
				continue
			}
			if c := l.byFD[fd]; c != nil {
				if fd == c.client {
					l.fromClient(c)
				} else {
					l.fromApp(c)
				}
			}
		}
	}
}

func (l *loop) watch(fd int) error {
	return unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)})
}

func (l *loop) accept(lfd int) {
	for {
		cfd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN: no more for now
		}
		_ = unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		// The app connection is made blocking, once per client
		// connection (wrk keeps its connections), then switched to
		// non-blocking for the loop.
		afd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			if err = unix.Connect(afd, l.app); err == nil {
				err = unix.SetNonblock(afd, true)
			}
		}
		if err != nil {
			unix.Close(cfd)
			if afd >= 0 {
				unix.Close(afd)
			}
			continue
		}
		_ = unix.SetsockoptInt(afd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		c := &loopConn{client: cfd, app: afd, x: newExchange()}
		l.byFD[cfd], l.byFD[afd] = c, c
		if l.watch(cfd) != nil || l.watch(afd) != nil {
			l.close(c)
		}
	}
}

func (l *loop) close(c *loopConn) {
	delete(l.byFD, c.client)
	delete(l.byFD, c.app)
	unix.Close(c.client) // closing removes them from the epoll set
	unix.Close(c.app)
}

// fromClient reads what the client sent and forwards a whole request when
// no answer is due.
func (l *loop) fromClient(c *loopConn) {
	x := c.x
	n, err := unix.Read(c.client, x.in[len(x.in):cap(x.in)])
	if err == unix.EAGAIN {
		return
	}
	if err != nil || n == 0 {
		l.close(c)
		return
	}
	x.in = x.in[:len(x.in)+n]
	if !c.waiting && !l.forward(c) {
		l.close(c)
	}
}

// forward sends the next whole request to the app, if there is one.
func (l *loop) forward(c *loopConn) bool {
	head, bad := c.x.request()
	if bad {
		return false
	}
	if head == nil {
		return true
	}
	if writeAll(c.app, head) != nil {
		return false
	}
	c.x.sent(len(head))
	c.waiting = true
	return true
}

// fromApp reads the app's answer and passes it on once whole.
func (l *loop) fromApp(c *loopConn) {
	x := c.x
	n, err := unix.Read(c.app, x.resp[len(x.resp):cap(x.resp)])
	if err == unix.EAGAIN {
		return
	}
	if err != nil || n == 0 || !c.waiting {
		l.close(c)
		return
	}
	x.resp = x.resp[:len(x.resp)+n]
	done, bad := x.response()
	if bad {
		l.close(c)
		return
	}
	if !done {
		return
	}
	if writeAll(c.client, x.resp) != nil {
		l.close(c)
		return
	}
	x.answered()
	c.waiting = false
	if !l.forward(c) { // a request that came while this one was out
		l.close(c)
	}
}

// writeAll writes b to a non-blocking socket, waiting in poll when its
// buffer is full (answers here are a few hundred bytes: it never is).
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EAGAIN {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(pfd, 5000); err != nil && err != unix.EINTR {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
