package topz

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	wire "minimesh/api/topz"
)

// Mux is where Register adds the handlers: an *http.ServeMux or the
// proxy's admin server.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Register adds GET /topz and GET /procz/{pid} to mux.
func (c *Collector) Register(mux Mux) {
	mux.Handle("GET /topz", c.TopzHandler())
	mux.Handle("GET /procz/{pid}", c.ProczHandler())
}

// LoopbackOnly serves h only to clients on loopback (kubectl port-forward
// and exec arrive there) and answers 403 to others: command lines and
// sockets are not for anyone who can reach a pod's admin port, which in
// Kubernetes listens on the pod IP for the kubelet's probes.
func LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil || !ap.Addr().Unmap().IsLoopback() {
			writeError(w, http.StatusForbidden, errors.New("topz: served only to loopback clients (use kubectl port-forward or exec, or meshctl top)"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// TopzHandler serves a Snapshot: JSON when the request has
// "Accept: application/json" or "?format=json", else a plain aligned
// table. "?sort=cpu" or "?sort=rss" sorts descending (default: by pid).
func (c *Collector) TopzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tab, err := c.Snapshot(r.Context())
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
		switch r.URL.Query().Get("sort") {
		case "cpu":
			slices.SortStableFunc(tab.Processes, func(a, b Row) int { return cmpDesc(a.CPUPercent, b.CPUPercent) })
		case "rss":
			slices.SortStableFunc(tab.Processes, func(a, b Row) int { return cmpDesc(a.RSSBytes, b.RSSBytes) })
		}
		if wantsJSON(r) {
			writeJSON(w, tab)
			return
		}
		writeTextHeader(w)
		WriteTable(w, tab)
	})
}

// ProczHandler serves Inspect of the {pid} path value (route it as
// "GET /procz/{pid}"), JSON or text as TopzHandler.
func (c *Collector) ProczHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pid, err := strconv.Atoi(r.PathValue("pid"))
		if err != nil || pid <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("topz: pid %q is not a process ID", r.PathValue("pid")))
			return
		}
		p, err := c.Inspect(r.Context(), pid)
		switch {
		case errors.Is(err, ErrNoProcess):
			writeError(w, http.StatusNotFound, err)
			return
		case err != nil:
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
		if wantsJSON(r) {
			writeJSON(w, p)
			return
		}
		writeTextHeader(w)
		WriteProcess(w, p)
	})
}

// WriteTable writes tab as an aligned plain-text table, every string
// escaped (termsafe); it is api/topz's, which meshctl prints with.
func WriteTable(w io.Writer, tab Table) { wire.WriteTable(w, tab) }

// WriteProcess writes p as plain text: its row, its sockets, its files;
// it is api/topz's, which meshctl prints with.
func WriteProcess(w io.Writer, p Process) { wire.WriteProcess(w, p) }

func cmpDesc[T int64 | float64](a, b T) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

func wantsJSON(r *http.Request) bool {
	if f := r.URL.Query().Get("format"); f != "" {
		return f == "json"
	}
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeTextHeader(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeTextHeader(w)
	w.WriteHeader(code)
	_, _ = io.WriteString(w, err.Error()+"\n")
}
