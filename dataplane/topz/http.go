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
	"text/tabwriter"

	"minimesh/internal/termsafe"
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

// esc escapes a value for a table cell: the tables are printed by meshctl
// from what a proxy answered, and a hostile one could answer anything.
var esc = termsafe.String

// WriteTable writes tab as an aligned plain-text table, every string
// escaped (termsafe).
func WriteTable(w io.Writer, tab Table) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	window := "since start"
	if tab.CPUWindowSeconds > 0 {
		window = fmt.Sprintf("over %.2fs", tab.CPUWindowSeconds)
	}
	fmt.Fprintf(tw, "# %d processes at %s, CPU %% %s\n", len(tab.Processes), tab.Time.UTC().Format("2006-01-02T15:04:05Z"), window)
	fmt.Fprintln(tw, "PID\tUSER\tCPU%\tRSS\tTHR\tFDS\tS\tCOMMAND")
	for _, p := range tab.Processes {
		fmt.Fprintf(tw, "%d\t%s\t%.1f\t%s\t%d\t%s\t%s\t%s\n", p.PID, esc(p.User), p.CPUPercent, bytesString(p.RSSBytes), p.Threads, fdsString(p.FDs), esc(p.State), esc(command(p)))
	}
	if tab.Truncated {
		fmt.Fprintln(tw, "# truncated")
	}
	_ = tw.Flush()
}

// WriteProcess writes p as plain text: its row, its sockets, its files.
func WriteProcess(w io.Writer, p Process) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "pid %d  user %s  cpu %.1f%% (since start)  rss %s  threads %d  fds %s  state %s\n",
		p.PID, esc(p.User), p.CPUPercent, bytesString(p.RSSBytes), p.Threads, fdsString(p.FDs), esc(p.State))
	fmt.Fprintf(tw, "command: %s\n\n", esc(command(p.Row)))
	fmt.Fprintf(tw, "SOCKETS (%d)\n", len(p.Sockets))
	fmt.Fprintln(tw, "FD\tPROTO\tLOCAL\tREMOTE\tSTATE")
	for _, s := range p.Sockets {
		proto := s.Proto
		if s.Type != "" {
			proto += "/" + s.Type
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", s.FD, esc(proto), esc(dash(s.Local)), esc(dash(s.Remote)), esc(dash(s.State)))
	}
	fmt.Fprintf(tw, "\nFILES (%d)\n", len(p.Files))
	fmt.Fprintln(tw, "FD\tPATH")
	for _, f := range p.Files {
		fmt.Fprintf(tw, "%d\t%s\n", f.FD, esc(f.Path))
	}
	if p.FDError != "" {
		fmt.Fprintf(tw, "\n# %s\n", esc(p.FDError))
	}
	if p.Truncated {
		fmt.Fprintln(tw, "# truncated")
	}
	_ = tw.Flush()
}

func command(p Row) string {
	if p.Args != "" {
		return p.Args
	}
	return "[" + p.Command + "]" // kernel threads have no command line
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fdsString(n int) string {
	if n < 0 {
		return "?"
	}
	return strconv.Itoa(n)
}

func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, suffix := float64(n), []string{"K", "M", "G", "T"}
	i := -1
	for v >= unit && i < len(suffix)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f%s", v, suffix[i])
}

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
