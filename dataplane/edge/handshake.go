package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"minimesh/certs"
)

// TLSListener performs TLS handshakes itself, each in its own goroutine with
// a deadline, and hands only finished *tls.Conn to the http.Server. Doing the
// handshake here rather than inside http.Server gives one place to classify
// and count failures (a missing client certificate never reaches any
// tls.Config callback) and keeps a slow handshake from holding the accept
// loop. http.Server still sees a *tls.Conn, so ALPN (HTTP/2) and r.TLS work;
// its own HandshakeContext call is a no-op on a finished handshake.
type TLSListener struct {
	inner   net.Listener
	config  *tls.Config
	timeout time.Duration
	onFail  func(net.Conn, error)
	// admit, when set, decides a finished handshake once more (a peer
	// revoked since its certificate was issued); an error refuses it.
	admit func(*tls.Conn) error

	ready chan net.Conn
	errs  chan error
	sem   chan struct{} // bounds handshakes in flight

	ctx       context.Context // cancelled by Close; aborts handshakes
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

var _ net.Listener = (*TLSListener)(nil)

// TLSOptions configures a TLSListener.
type TLSOptions struct {
	Timeout    time.Duration // of each handshake
	MaxPending int           // handshakes in flight; more wait in the kernel's accept queue
	// OnFail is told every failed handshake (Classify gives its reason).
	// Required.
	OnFail func(net.Conn, error)
	// Admit, when set, decides a finished handshake once more (a peer
	// revoked since its certificate was issued); an error refuses it and
	// goes to OnFail.
	Admit func(*tls.Conn) error
}

// NewTLSListener accepts from inner and hands out connections whose TLS
// handshake (with config) finished and was admitted.
func NewTLSListener(inner net.Listener, config *tls.Config, o TLSOptions) *TLSListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &TLSListener{
		inner: inner, config: config, timeout: o.Timeout, onFail: o.OnFail, admit: o.Admit,
		ready: make(chan net.Conn), errs: make(chan error),
		sem: make(chan struct{}, o.MaxPending),
		ctx: ctx, cancel: cancel,
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *TLSListener) acceptLoop() {
	defer l.wg.Done()
	for {
		select {
		case l.sem <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		c, err := l.inner.Accept()
		if err != nil {
			<-l.sem
			// http.Server backs off on temporary errors (EMFILE) and stops
			// on others; either way this send waits for it or for Close.
			select {
			case l.errs <- err:
			case <-l.ctx.Done():
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		l.wg.Add(1)
		go l.handshake(c)
	}
}

func (l *TLSListener) handshake(c net.Conn) {
	defer l.wg.Done()
	defer func() { <-l.sem }()
	tc := tls.Server(c, l.config)
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	err := tc.HandshakeContext(ctx)
	timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	if err == nil && l.admit != nil {
		err = l.admit(tc)
	}
	if err != nil {
		if timedOut {
			err = fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
		}
		if l.ctx.Err() == nil {
			l.onFail(c, err)
		}
		_ = tc.Close()
		return
	}
	select {
	case l.ready <- tc:
	case <-l.ctx.Done():
		_ = tc.Close()
	}
}

func (l *TLSListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting, aborts handshakes in flight and waits for their
// goroutines. Connections already handed to the server are not touched.
func (l *TLSListener) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		l.closeErr = l.inner.Close()
		l.wg.Wait()
	})
	return l.closeErr
}

func (l *TLSListener) Addr() net.Addr { return l.inner.Addr() }

// Classify maps a handshake error to one of the fixed reason labels.
func Classify(err error) string {
	var (
		invalid x509.CertificateInvalidError
		unknown x509.UnknownAuthorityError
		ne      net.Error
		alert   tls.AlertError
		rec     tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, ErrNoSVID), errors.Is(err, certs.ErrNoSVID), errors.Is(err, certs.ErrSVIDExpired):
		return ReasonNoSVID
	case errors.Is(err, ErrRevoked):
		return ReasonRevoked
	case errors.Is(err, certs.ErrUnauthorized):
		return ReasonUnauthorized
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return ReasonExpired
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	case errors.Is(err, certs.ErrPeerUnverified), errors.As(err, &unknown), errors.As(err, &invalid):
		return ReasonUntrusted
	// crypto/tls has no sentinel for this one.
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return ReasonNoClientCert
	case errors.As(err, &alert):
		// The peer refused us; certificate_required (116) is the TLS 1.3
		// alert for a client that sent none.
		if uint8(alert) == 116 {
			return ReasonNoClientCert
		}
		if uint8(alert) == 45 { // certificate_expired
			return ReasonExpired
		}
		if uint8(alert) == 42 || uint8(alert) == 48 { // bad_certificate, unknown_ca
			return ReasonUntrusted
		}
		return ReasonProtocol
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return ReasonClosed
	case errors.As(err, &rec), strings.HasPrefix(err.Error(), "tls:"):
		return ReasonProtocol
	}
	return ReasonOther
}

// OwnSource makes errors of a foreign x509svid.Source recognisable as "we
// have no SVID" (certs.SVIDSource already says so with its own sentinels,
// and is passed through so that certs can reuse its prebuilt certificate).
func OwnSource(src x509svid.Source) x509svid.Source {
	if _, ok := src.(*certs.SVIDSource); ok {
		return src
	}
	return svidSource{src}
}

type svidSource struct{ x509svid.Source }

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) {
	svid, err := s.Source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSVID, err)
	}
	return svid, nil
}
