package api

// App probes: the contract between `meshctl inject` and mesh-proxy's admin
// port. In a pod whose inbound traffic is captured, kubelet's probes of the
// app's port would be redirected into the proxy's mTLS listener and fail.
// Inject therefore points them at the admin port, which the redirect leaves
// alone, under AppProbePath(container, kind), and hands the original
// probes to mesh-proxy as the JSON form of AppProbes (env MESH_APP_PROBES);
// the admin port (dataplane/admin) runs each one against the app on
// loopback, the way kubelet would have. Both sides parse and validate with
// the functions below, so what inject writes is what the proxy accepts.

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// AppHealthPrefix starts every rewritten probe's path.
const AppHealthPrefix = "/app-health/"

// AppProbePath is the admin path of a container's probe of a kind
// ("livez", "readyz" or "startupz").
func AppProbePath(container, kind string) string {
	return AppHealthPrefix + container + "/" + kind
}

// AppProbes maps an admin path (AppProbePath) to the app's original probe.
// Its JSON form is the value of mesh-proxy's --app-probes flag.
type AppProbes map[string]AppProbe

// AppProbe is one of the app's original probes: an HTTP GET or a TCP
// connect, like kubelet's (exec probes need no rewriting; gRPC probes are
// not supported).
type AppProbe struct {
	HTTPGet   *HTTPGetProbe   `json:"httpGet,omitempty"`
	TCPSocket *TCPSocketProbe `json:"tcpSocket,omitempty"`
	// TimeoutSeconds bounds the probe (default 1, kubelet's; at most 60).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// HTTPGetProbe is an HTTP GET to the app on loopback.
type HTTPGetProbe struct {
	Path string `json:"path,omitempty"`
	Port int    `json:"port"`
	// Scheme is HTTP (default) or HTTPS. Like kubelet, an HTTPS probe
	// does not verify the app's certificate.
	Scheme      string       `json:"scheme,omitempty"`
	HTTPHeaders []HTTPHeader `json:"httpHeaders,omitempty"`
}

// HTTPHeader is a header sent with an HTTP probe.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// TCPSocketProbe is a TCP connect to the app on loopback.
type TCPSocketProbe struct {
	Port int `json:"port"`
}

var (
	appProbePathRE = regexp.MustCompile(`^/app-health/[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/(livez|readyz|startupz)$`)
	headerNameRE   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// ParseAppProbes decodes the JSON form strictly (unknown fields are
// errors) and validates it. An empty string is no probe. Errors wrap
// ErrInvalid.
func ParseAppProbes(s string) (AppProbes, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var p AppProbes
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: app probes: %w", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: app probes: data after the JSON object", ErrInvalid)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Validate reports whether every probe can be run; the error (wrapping
// ErrInvalid) names the first bad probe's path, in sorted order.
func (p AppProbes) Validate() error {
	paths := make([]string, 0, len(p))
	for path := range p {
		paths = append(paths, path)
	}
	slices.Sort(paths) // the first error is the same every time
	for _, path := range paths {
		if err := p[path].validate(path); err != nil {
			return err
		}
	}
	return nil
}

func (a AppProbe) validate(path string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: app probe %s: %s", ErrInvalid, path, fmt.Sprintf(format, args...))
	}
	if !appProbePathRE.MatchString(path) {
		return bad("path must be /app-health/<container>/<livez|readyz|startupz>")
	}
	if (a.HTTPGet == nil) == (a.TCPSocket == nil) {
		return bad("exactly one of httpGet and tcpSocket")
	}
	if a.TimeoutSeconds < 0 || a.TimeoutSeconds > 60 {
		return bad("timeoutSeconds %d: from 0 to 60", a.TimeoutSeconds)
	}
	port := 0
	if h := a.HTTPGet; h != nil {
		port = h.Port
		if h.Scheme != "" && h.Scheme != "HTTP" && h.Scheme != "HTTPS" {
			return bad("scheme %q: HTTP or HTTPS", h.Scheme)
		}
		if h.Path != "" && !strings.HasPrefix(h.Path, "/") {
			return bad("path %q must start with /", h.Path)
		}
		if strings.ContainsAny(h.Path, " \r\n\t#") {
			return bad("path %q has a space, control character or fragment", h.Path)
		}
		for _, hd := range h.HTTPHeaders {
			if !headerNameRE.MatchString(hd.Name) || strings.ContainsAny(hd.Value, "\r\n\x00") {
				return bad("header %q is not a valid header", hd.Name)
			}
		}
	} else {
		port = a.TCPSocket.Port
	}
	if port < 1 || port > 65535 {
		return bad("port %d: not a TCP port", port)
	}
	return nil
}
