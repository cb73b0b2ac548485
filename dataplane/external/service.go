package external

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"strconv"
	"sync/atomic"
	"time"

	"minimesh/api"
	"minimesh/dataplane/accesslog"
	"minimesh/dataplane/applink"
	"minimesh/dataplane/balancer"
	meshv1 "minimesh/proto/mesh/v1"
)

// Service is one compiled ExternalService. It serves HTTP (for http and
// https) as an http.Handler.
type Service struct {
	Name, Namespace string

	set            *Set
	spec           *meshv1.ExternalServiceSpec
	proto          meshv1.ExternalProtocol
	port           uint32
	targets        []balancer.Target
	bal            *balancer.Balancer
	tls            *tls.Config // nil for http and tcp
	pair           *pair       // nil without a client certificate
	connectTimeout time.Duration
	idleTimeout    time.Duration
	slots          chan struct{} // TLS/TCP relays open

	// HTTP and HTTPS only.
	transport *http.Transport
	rp        *httputil.ReverseProxy
	authority string // the Host sent
}

// Protocol is the service's protocol.
func (sv *Service) Protocol() meshv1.ExternalProtocol { return sv.proto }

func (sv *Service) isTLS() bool {
	return sv.proto == meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_TLS || sv.proto == meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTPS
}

func (sv *Service) isHTTP() bool {
	return sv.proto == meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTP || sv.proto == meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTPS
}

// Status is the service's hosts with their load and ejection state.
func (sv *Service) Status() []balancer.Status { return sv.bal.Status() }

// retire closes the idle connections of a service no longer in force.
func (sv *Service) retire() {
	if sv.transport != nil {
		sv.transport.CloseIdleConnections()
	}
}

// DialError is a call that no host answered (or verified): each attempt's
// error, in order.
type DialError struct {
	Service string
	Errs    []error
}

func (e *DialError) Error() string {
	if len(e.Errs) == 0 {
		return fmt.Sprintf("external service %q: no host to connect to", e.Service)
	}
	return fmt.Sprintf("external service %q: %d connect attempts failed, the last: %v", e.Service, len(e.Errs), e.Errs[len(e.Errs)-1])
}

func (e *DialError) Unwrap() []error { return e.Errs }

// Dial connects to one of the hosts, with TLS for tls and https: up to
// ConnectAttempts tries, each to a host the balancer picks and each
// bounded by connectTimeout, whose failures (refused, timed out, a server
// certificate that does not verify) count towards the host's ejection.
func (sv *Service) Dial(ctx context.Context) (net.Conn, error) {
	derr := &DialError{Service: sv.Name}
	for range sv.set.cfg.ConnectAttempts {
		e, err := sv.bal.Pick()
		if err != nil {
			break
		}
		c, err := sv.dialOne(ctx, e.Addr)
		sv.bal.Done(e, err == nil)
		if err == nil {
			return c, nil
		}
		derr.Errs = append(derr.Errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, derr
}

// dialOne connects to addr, and for tls and https completes a verified
// handshake, within connectTimeout.
func (sv *Service) dialOne(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, sv.connectTimeout)
	defer cancel()
	c, err := (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: connect: %w", addr, err)
	}
	if sv.tls == nil {
		return c, nil
	}
	tc := tls.Client(c, sv.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%s: TLS handshake (server name %q): %s", addr, sv.tls.ServerName, explain(err))
	}
	return tc, nil
}

// explain says why a handshake failed in words an operator can act on.
func explain(err error) string {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	switch {
	case errors.As(err, &ua):
		return "server certificate not verified: signed by an authority that spec.caBundle (or the system roots) does not hold: " + err.Error()
	case errors.As(err, &hn):
		return "server certificate not verified: it is not valid for the server name: " + err.Error()
	case errors.As(err, &ci):
		return "server certificate not verified: " + err.Error()
	case errors.As(err, &ve):
		return "server certificate not verified: " + err.Error()
	}
	return err.Error()
}

// initHTTP sets up the pool and the reverse proxy of an http or https
// service.
func (sv *Service) initHTTP() {
	host := api.ExternalServerName(sv.spec)
	def := uint32(80)
	scheme := "http"
	if sv.proto == meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTPS {
		def, scheme = 443, "https"
	}
	sv.authority = host
	if sv.port != def {
		sv.authority = net.JoinHostPort(host, strconv.Itoa(int(sv.port)))
	}
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return sv.Dial(ctx) }
	sv.transport = &http.Transport{
		Proxy:                  nil,
		DialContext:            dial, // http
		DialTLSContext:         dial, // https: Dial does the verified handshake
		MaxIdleConns:           sv.set.cfg.MaxIdleConns,
		MaxIdleConnsPerHost:    sv.set.cfg.MaxIdleConns,
		MaxConnsPerHost:        sv.set.cfg.MaxConns,
		IdleConnTimeout:        sv.idleTimeout,
		ExpectContinueTimeout:  time.Second,
		ResponseHeaderTimeout:  sv.set.cfg.ResponseHeader,
		MaxResponseHeaderBytes: 1 << 20,
	}
	log := sv.set.log
	sv.rp = &httputil.ReverseProxy{
		Transport: sv.transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = scheme
			pr.Out.URL.Host = sv.authority
			pr.Out.Host = sv.authority
			applink.StripMeshHeaders(pr.Out.Header)
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				w.WriteHeader(499) // the app went away; nothing reads this
				return
			}
			log.Warn("external: call failed", slog.String("external_service", sv.Name),
				slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("error", err.Error()))
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusBadGateway)
			if de := (*DialError)(nil); errors.As(err, &de) {
				fmt.Fprintf(w, "minimesh: %v\n", de) // it names the service
				return
			}
			fmt.Fprintf(w, "minimesh: external service %q: %v\n", sv.Name, err)
		},
	}
}

// ServeHTTP forwards one request of the app to the service, recording it
// in the metrics and, when on, the access log.
func (sv *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if sv.rp == nil {
		Refuse(w, fmt.Sprintf("minimesh: external service %q is %s, not http or https: reach it through its own --external port\n", sv.Name, protoName(sv.proto)))
		return
	}
	cfg := &sv.set.cfg
	start := cfg.Clock.Now()
	var upstream atomic.Pointer[string]
	ctx := httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		a := i.Conn.RemoteAddr().String()
		upstream.Store(&a)
	}})
	rw := &recorder{ResponseWriter: w}
	sv.rp.ServeHTTP(rw, r.WithContext(ctx))
	d := cfg.Clock.Now().Sub(start)
	if cfg.Observe != nil {
		cfg.Observe(sv.Name, sv.Namespace, rw.status(), d.Seconds())
	}
	if al := cfg.AccessLog; al != nil && al.Enabled() {
		up := sv.Name
		if a := upstream.Load(); a != nil {
			up = sv.Name + " " + *a
		}
		al.Log(&accesslog.Entry{
			Time: start, SourceAddress: r.RemoteAddr, Method: r.Method, Authority: r.Host,
			Path: r.URL.EscapedPath(), Protocol: r.Proto, Status: rw.status(), BytesReceived: max(r.ContentLength, 0),
			BytesSent: rw.written, Duration: d, Upstream: up, UserAgent: r.UserAgent(), RequestID: r.Header.Get("X-Request-Id"),
		})
	}
}

// Refuse answers 502 with reason as the body.
func Refuse(w http.ResponseWriter, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusBadGateway)
	_, _ = io.WriteString(w, reason)
}

func protoName(p meshv1.ExternalProtocol) string {
	switch p {
	case meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_TLS:
		return "tls"
	case meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTP:
		return "http"
	case meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTPS:
		return "https"
	case meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_TCP:
		return "tcp"
	}
	return p.String()
}

// recorder notes the status and body bytes of a response.
type recorder struct {
	http.ResponseWriter
	code    int
	written int64
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.written += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush lets ReverseProxy flush streamed responses.
func (r *recorder) Flush() {
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}
