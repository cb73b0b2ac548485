package admin

// App probes: in a pod whose inbound traffic is captured, kubelet's probes
// of the app's port would be redirected into the proxy's mTLS listener and
// fail. `meshctl inject` therefore points them at the admin port, which the
// redirect leaves alone, under /app-health/<container>/<kind>, and hands
// the original probes to mesh-proxy (env MESH_APP_PROBES); this handler
// runs each one against the app on loopback, the way kubelet would have.

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"minimesh/api"
)

// The probes' settings are a contract with `meshctl inject`, so they live
// in api (api/probes.go); these names are theirs.
type (
	AppProbes      = api.AppProbes
	AppProbe       = api.AppProbe
	HTTPGetProbe   = api.HTTPGetProbe
	HTTPHeader     = api.HTTPHeader
	TCPSocketProbe = api.TCPSocketProbe
)

// AppHealthPrefix starts every rewritten probe's path.
const AppHealthPrefix = api.AppHealthPrefix

// AppProbePath is the admin path of a container's probe of a kind
// ("livez", "readyz" or "startupz").
func AppProbePath(container, kind string) string { return api.AppProbePath(container, kind) }

// ParseAppProbes is api.ParseAppProbes whose errors also wrap
// ErrInvalidConfig.
func ParseAppProbes(s string) (AppProbes, error) {
	p, err := api.ParseAppProbes(s)
	if err != nil {
		return nil, invalidConfig{err}
	}
	return p, nil
}

// invalidConfig is an error of api's that is also one of this package's
// config errors; its text is api's.
type invalidConfig struct{ err error }

func (e invalidConfig) Error() string   { return e.err.Error() }
func (e invalidConfig) Unwrap() []error { return []error{ErrInvalidConfig, e.err} }

// ProbeConfig configures the app probe handler.
type ProbeConfig struct {
	Probes AppProbes
	// Host is the app's address for every probe (default 127.0.0.1): the
	// probes only ever reach the app in the pod, whatever they say.
	Host string
	// MaxConcurrent bounds probes running at once (default 8); more are
	// answered 503 at once, so the admin port cannot be used to flood the
	// app.
	MaxConcurrent int
	Logger        *slog.Logger // discards if nil
}

type probeHandler struct {
	cfg   ProbeConfig
	slots chan struct{}
	http  *http.Client
}

// NewProbeHandler returns the handler of AppHealthPrefix: it runs the
// probe registered for the request's path and answers 200 when it
// succeeded, or the app's status code, or 503 with the reason. Register it
// with Server.Handle("GET "+AppHealthPrefix, h).
func NewProbeHandler(cfg ProbeConfig) (http.Handler, error) {
	if err := cfg.Probes.Validate(); err != nil {
		return nil, invalidConfig{err}
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &probeHandler{cfg: cfg, slots: make(chan struct{}, cfg.MaxConcurrent)}
	h.http = &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DisableKeepAlives: true, // as kubelet: a probe is one connection
			// kubelet does not verify an HTTPS probe's certificate, and
			// an app's may be for any name: neither do we. The probe never
			// leaves the pod (Host is loopback).
			TLSClientConfig:        &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // see above
			MaxResponseHeaderBytes: 64 << 10,
		},
		// Follow redirects within the app only, as kubelet does; a
		// redirect elsewhere ends the probe with the redirect's status.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 || req.URL.Host != via[0].URL.Host {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	return h, nil
}

func (h *probeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	probe, ok := h.cfg.Probes[r.URL.Path]
	if !ok {
		writeText(w, http.StatusNotFound, "no app probe at "+r.URL.Path+"\n")
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		writeText(w, http.StatusServiceUnavailable, "too many app probes at once\n")
		return
	}
	timeout := time.Duration(probe.TimeoutSeconds) * time.Second
	if timeout == 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	if probe.TCPSocket != nil {
		h.tcp(ctx, w, r.URL.Path, probe.TCPSocket)
		return
	}
	h.get(ctx, w, r, probe.HTTPGet)
}

func (h *probeHandler) tcp(ctx context.Context, w http.ResponseWriter, path string, p *TCPSocketProbe) {
	addr := net.JoinHostPort(h.cfg.Host, strconv.Itoa(p.Port))
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		h.fail(w, path, err)
		return
	}
	_ = c.Close()
	writeText(w, http.StatusOK, "ok\n")
}

// maxProbeBody is how much of the app's answer is passed on (kubelet reads
// at most 10 KiB of it).
const maxProbeBody = 10 << 10

func (h *probeHandler) get(ctx context.Context, w http.ResponseWriter, r *http.Request, p *HTTPGetProbe) {
	scheme := "http"
	if p.Scheme == "HTTPS" {
		scheme = "https"
	}
	path := p.Path
	if path == "" {
		path = "/"
	}
	url := scheme + "://" + net.JoinHostPort(h.cfg.Host, strconv.Itoa(p.Port)) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		h.fail(w, r.URL.Path, err)
		return
	}
	// kubelet's own headers first (its User-Agent, Accept), then the
	// probe's, which may replace them or set Host.
	for _, k := range []string{"User-Agent", "Accept"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	for _, hd := range p.HTTPHeaders {
		if strings.EqualFold(hd.Name, "Host") {
			req.Host = hd.Value
			continue
		}
		req.Header.Add(hd.Name, hd.Value)
	}
	resp, err := h.http.Do(req)
	if err != nil {
		h.fail(w, r.URL.Path, err)
		return
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = io.Copy(&body, io.LimitReader(resp.Body, maxProbeBody))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	// The app's status as is: kubelet counts 200-399 as success. No
	// Location is passed on, so kubelet never follows it to the admin port.
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body.Bytes())
}

func (h *probeHandler) fail(w http.ResponseWriter, path string, err error) {
	h.cfg.Logger.Debug("admin: app probe failed", slog.String("probe", path), slog.Any("error", err))
	writeText(w, http.StatusServiceUnavailable, "app probe failed: "+err.Error()+"\n")
}
