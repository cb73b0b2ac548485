package controlplane

import (
	"errors"
	"net/http"
	"sync"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// meshd's health, asked two ways:
//
//   - grpc.health.v1 on the TLS gRPC port, for meshctl check and
//     grpc_health_probe: Check and List need no client certificate (any TLS
//     client that trusts meshd's root may ask, as it may Bootstrap; their
//     rules are in MethodRules); Watch is refused (authn's Deny): an anonymous caller would hold a stream, and a
//     goroutine, open for as long as it likes. Check answers for "" (meshd)
//     and for each of meshd's services by name.
//   - HTTP GET /livez and /readyz (HealthHandler), served by meshd on its
//     plaintext metrics listener, for the kubelet, whose gRPC probe cannot
//     do TLS on the Kubernetes versions minimesh supports.
//
// Ready means serving: Run is serving gRPC, which New only allows once the
// store's cache is loaded (etcd: read in full at Open) and the CA is
// loaded. It is not about etcd after that: a replica cut off from etcd
// still renews SVIDs from its cache and pushes the config it has, so it
// stays ready (and in the Service's endpoints) while etcd is down. It goes
// NOT_SERVING when shutdown starts, before the streams are ended, so a
// load balancer stops sending new clients first. Live means the process
// answers: a restart would not make a meshd that cannot reach etcd better.

// The phases of a Server's life, as /readyz names them.
var (
	errStarting = errors.New("meshd is starting: not serving gRPC yet")
	errStopping = errors.New("meshd is shutting down")
)

type healthState struct {
	grpc *health.Server

	mu  sync.Mutex
	err error // nil: serving
}

func newHealth() *healthState {
	h := &healthState{grpc: health.NewServer(), err: errStarting}
	for _, name := range healthServices() {
		h.grpc.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

// healthServices are the names Check answers for: "" and meshd's services.
func healthServices() []string {
	names := []string{""}
	for _, sd := range Services() {
		names = append(names, sd.ServiceName)
	}
	return names
}

func (h *healthState) serving() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != errStarting { // stopping is final
		return
	}
	h.err = nil
	for _, name := range healthServices() {
		h.grpc.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
}

func (h *healthState) stopping() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err = errStopping
	h.grpc.Shutdown() // every name NOT_SERVING, for good
}

func (h *healthState) ready() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Ready returns nil while meshd serves gRPC (the cache loaded; etcd may be
// down), else why not: it is starting or shutting down.
func (s *Server) Ready() error { return s.health.ready() }

// HealthHandler serves GET /livez (200 "ok" while the process answers)
// and GET /readyz (200 "ready", or 503 "not ready: REASON" as Ready says).
// meshd serves it on its metrics listener (--metrics).
func (s *Server) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		writeHealth(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.Ready(); err != nil {
			writeHealth(w, http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
			return
		}
		writeHealth(w, http.StatusOK, "ready\n")
	})
	return mux
}

func writeHealth(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
