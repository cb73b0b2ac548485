package meshctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/api"
	"minimesh/api/authz"
	"minimesh/internal/dashboard"
	meshv1 "minimesh/proto/mesh/v1"
)

func init() {
	examples["meshctl dashboard"] = `  # Serve the dashboard on 127.0.0.1 and open it in the browser:
  meshctl dashboard
  # A fixed port, without opening a browser (open the URL it prints):
  meshctl dashboard --port 8001 --no-open`
}

func newDashboardCmd(g *globals) *cobra.Command {
	var (
		port   int
		noOpen bool
	)
	cmd := &cobra.Command{
		Use:   "dashboard [--port 0] [--no-open]",
		Short: "Serve a web UI of the mesh on 127.0.0.1: topology, proxies, certificates, policy, resources",
		Long: `Serves a web UI on 127.0.0.1 and forwards its calls to meshd with the
operator credential, as kubectl proxy does: meshd gets no new way in and
the browser needs no client certificate. Only read-only calls pass (list,
get, status, stats, explain). The URL it prints carries a token for this
run that becomes the session cookie; requests without it, or with a Host
other than 127.0.0.1:PORT or localhost:PORT, get 403. The browser is
opened on a private redirect page (0600, removed at exit), so the token
never appears in a command line other local users can read. Runs until
interrupted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			defer conn.Close()
			// A failed call is shown in the page and logged here, where the
			// operator can keep it (slog quotes what meshd's errors carry).
			logger := slog.New(slog.NewTextHandler(g.io.Err, &slog.HandlerOptions{Level: slog.LevelWarn}))
			s, err := dashboard.New(dashboard.Config{Conn: conn, Port: port, Views: dashboardViews(), Timeout: g.timeout, Logger: logger})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			printf(g.io.Out, "meshctl dashboard: serving on http://%s (Ctrl-C stops it)\nopen: %s\n", s.Addr(), s.URL())
			if !noOpen {
				cleanup, err := openBrowser(s.URL())
				if err != nil {
					printf(g.io.Err, "could not open a browser (%v): open the URL above\n", err)
				}
				defer cleanup()
			}
			return s.Serve(ctx)
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "port on 127.0.0.1 (0 picks a free one)")
	cmd.Flags().BoolVar(&noOpen, "no-open", false, "print the URL without opening a browser")
	return cmd
}

// openBrowser opens url with the desktop's opener, without waiting for it.
// The opener (and a browser it starts) gets the path of a redirect page,
// not url: a command line is readable by every local user (ps), and url
// carries the session token. The page is 0600 in a 0700 directory, as
// Jupyter does it; cleanup removes it (when the dashboard stops: a browser
// may take a while to start).
func openBrowser(url string) (cleanup func(), err error) {
	cleanup = func() {}
	name := "xdg-open"
	switch runtime.GOOS {
	case "darwin":
		name = "open"
	case "windows":
		return cleanup, fmt.Errorf("not on %s", runtime.GOOS)
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return cleanup, err
	}
	page, cleanup, err := redirectPage(url)
	if err != nil {
		return cleanup, err
	}
	if err := startOpener(path, page); err != nil {
		return cleanup, err
	}
	return cleanup, nil
}

// startOpener runs the opener on arg without waiting (tests replace it).
var startOpener = func(opener, arg string) error {
	c := exec.Command(opener, arg)
	if err := c.Start(); err != nil {
		return err
	}
	go func() { _ = c.Wait() }()
	return nil
}

// redirectPage writes an HTML page that sends the browser on to url, in a
// new private directory, and returns its path and the removal of both.
func redirectPage(url string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "meshctl-dashboard-") // 0700
	if err != nil {
		return "", func() {}, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	u := html.EscapeString(url)
	page := "<!doctype html>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"refresh\" content=\"0;url=" + u + "\">\n" +
		"<title>minimesh dashboard</title>\n<p>Opening the dashboard: <a href=\"" + u + "\">continue</a>.</p>\n"
	path := filepath.Join(dir, "open.html")
	if err := os.WriteFile(path, []byte(page), 0o600); err != nil {
		cleanup()
		return "", func() {}, err
	}
	return path, cleanup, nil
}

// dashboardViews are the documents the dashboard computes from allowlisted
// calls with meshctl's own code: edges as meshctl edges prints them, an
// edge over time, authz explain, and resources as YAML.
func dashboardViews() map[string]dashboard.View {
	return map[string]dashboard.View{
		"Edges":      edgesView,
		"EdgeSeries": edgeSeriesView,
		"Explain":    explainView,
		"Resources":  resourcesView,
	}
}

// decodeView reads a view's JSON request strictly into v.
func decodeView(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// viewWindow checks a window in seconds as stat's --window does.
func viewWindow(sec float64) (time.Duration, error) {
	if sec == 0 {
		return time.Minute, nil
	}
	if !(sec >= 10 && sec <= 900) {
		return 0, fmt.Errorf("windowSeconds %v: must be 10 to 900", sec)
	}
	return time.Duration(sec * float64(time.Second)), nil
}

// dashEdge is an edge as meshctl edges prints it, with the destination's
// service name on its own.
type dashEdge struct {
	statRow
	DestinationService string `json:"destinationService"`
	// The caller as meshd keys the edge (statRow.Source is its label), for
	// EdgeSeries.
	SourceService   string `json:"sourceService"`
	SourceNamespace string `json:"sourceNamespace"`
}

func edgesView(ctx context.Context, c meshv1.AdminServiceClient, body []byte) (any, error) {
	var req struct {
		WindowSeconds float64 `json:"windowSeconds"`
	}
	if err := decodeView(body, &req); err != nil {
		return nil, fmt.Errorf("view Edges: %w", err)
	}
	w, err := viewWindow(req.WindowSeconds)
	if err != nil {
		return nil, err
	}
	resp, err := c.Stats(ctx, &meshv1.StatsRequest{Window: durationpb.New(w)})
	if err != nil {
		return nil, err
	}
	doc := edgesDoc(resp)
	out := struct {
		Window           string     `json:"window"`
		WindowSeconds    float64    `json:"windowSeconds"`
		ReplicasAsked    uint32     `json:"replicasAsked"`
		ReplicasAnswered uint32     `json:"replicasAnswered"`
		ReplicaErrors    []string   `json:"replicaErrors"`
		Edges            []dashEdge `json:"edges"`
		EdgesFolded      uint32     `json:"edgesFolded"`
	}{Window: doc.Window, WindowSeconds: w.Seconds(), ReplicasAsked: doc.ReplicasAsked, ReplicasAnswered: doc.ReplicasAnswered,
		ReplicaErrors: append([]string{}, doc.ReplicaErrors...), Edges: []dashEdge{}, EdgesFolded: doc.EdgesFolded}
	for i, r := range doc.Edges {
		e := resp.GetEdges()[i]
		out.Edges = append(out.Edges, dashEdge{statRow: r, DestinationService: e.GetDestinationService(), SourceService: e.GetSourceService(), SourceNamespace: e.GetSourceNamespace()})
	}
	return out, nil
}

// seriesPoint is one 10 s step of an edge.
type seriesPoint struct {
	End         time.Time `json:"end"`
	RPS         float64   `json:"rps"`
	SuccessRate *float64  `json:"successRate"`
	P99         *float64  `json:"p99Seconds"`
}

// stepsCover checks that e's steps hold every request of its totals. A
// replica that does not know steps (an older meshd, in a rolling upgrade)
// counts in the totals only, and a chart of the steps would miss its
// share.
func stepsCover(e *meshv1.EdgeStats) error {
	var inSteps uint64
	for _, st := range e.GetSteps() {
		for _, v := range st.GetClasses() {
			inSteps += v
		}
	}
	var edge traffic
	edge.add(e)
	if all := edge.total(); inSteps != all {
		return fmt.Errorf("%d of the edge's %d requests came from meshd replicas that answered without their 10 s samples (older than this meshctl); the chart would undercount: try again once every replica runs this version", all-inSteps, all)
	}
	return nil
}

// statsSample is meshd's sample of traffic (controlplane/stats.Bucket).
const statsSample = 10 * time.Second

// edgeSeriesView is one edge over the last windowSeconds in 10 s steps:
// meshd's own 10 s samples (StatsRequest.steps), from one reading, the
// complete ones only (the sample in progress would show as a drop).
func edgeSeriesView(ctx context.Context, c meshv1.AdminServiceClient, body []byte) (any, error) {
	var req struct {
		Source          string  `json:"source"` // its label, for the answer
		SourceService   string  `json:"sourceService"`
		SourceNamespace string  `json:"sourceNamespace"`
		MTLS            *bool   `json:"mtls"`
		Destination     string  `json:"destinationService"`
		Namespace       string  `json:"namespace"`
		WindowSeconds   float64 `json:"windowSeconds"`
	}
	if err := decodeView(body, &req); err != nil {
		return nil, fmt.Errorf("view EdgeSeries: %w", err)
	}
	if req.Destination == "" {
		return nil, fmt.Errorf("view EdgeSeries: destinationService: required")
	}
	if req.MTLS == nil {
		return nil, fmt.Errorf("view EdgeSeries: mtls: required (with sourceService and sourceNamespace, the edge's caller)")
	}
	w, err := viewWindow(req.WindowSeconds)
	if err != nil {
		return nil, err
	}
	src := &meshv1.EdgeSource{Service: req.SourceService, Namespace: req.SourceNamespace, Mtls: *req.MTLS}
	resp, err := c.Stats(ctx, &meshv1.StatsRequest{Window: durationpb.New(w), Service: req.Destination, Namespace: req.Namespace, Steps: true, Source: src})
	if err != nil {
		return nil, err
	}
	if resp.GetNow() == nil {
		return nil, fmt.Errorf("view EdgeSeries: meshd answered without its 10 s samples (a meshd older than this meshctl)")
	}
	per := map[int64]*traffic{}
	for _, e := range resp.GetEdges() {
		// A meshd older than source answers every caller's edges.
		if e.GetSourceService() != src.GetService() || e.GetSourceNamespace() != src.GetNamespace() || e.GetMtls() != src.GetMtls() ||
			e.GetDestinationService() != req.Destination {
			continue
		}
		if err := stepsCover(e); err != nil {
			return nil, fmt.Errorf("view EdgeSeries: %w", err)
		}
		for _, st := range e.GetSteps() {
			t := per[st.GetStartUnix()]
			if t == nil {
				t = &traffic{}
				per[st.GetStartUnix()] = t
			}
			t.add(&meshv1.EdgeStats{Classes: st.GetClasses(), LatencyBuckets: st.GetLatencyBuckets()})
		}
	}
	step := int64(statsSample / time.Second)
	current := resp.GetNow().AsTime().Unix() / step * step // in progress: left out
	points := []seriesPoint{}
	for i := int64(w/statsSample) - 1; i >= 0; i-- {
		start := current - (i+1)*step
		d := per[start]
		if d == nil {
			d = &traffic{}
		}
		p := seriesPoint{End: time.Unix(start+step, 0).UTC(), RPS: float64(d.total()) / float64(step)}
		if d.total() > 0 {
			s := d.success()
			p.SuccessRate = &s
		}
		if q := d.quantile(.99, resp.GetLatencyBounds()); !math.IsNaN(q) {
			p.P99 = &q
		}
		points = append(points, p)
	}
	return map[string]any{"source": req.Source, "destinationService": req.Destination, "namespace": req.Namespace, "stepSeconds": step, "points": points}, nil
}

func explainView(ctx context.Context, c meshv1.AdminServiceClient, body []byte) (any, error) {
	var req struct {
		From      string `json:"from"`
		To        string `json:"to"`
		Namespace string `json:"namespace"`
		Method    string `json:"method"`
		Path      string `json:"path"`
	}
	if err := decodeView(body, &req); err != nil {
		return nil, fmt.Errorf("view Explain: %w", err)
	}
	if _, err := spiffeid.FromString(req.From); err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	if req.To == "" {
		return nil, fmt.Errorf("to: required (the destination service)")
	}
	if req.Namespace == "" {
		req.Namespace = api.DefaultNamespace
	}
	if req.Method == "" {
		req.Method = "GET"
	}
	if req.Path == "" {
		req.Path = "/"
	}
	x, policies, err := explainRequest(ctx, c, req.Namespace, req.To, authz.Request{Peer: req.From, Method: req.Method, Path: req.Path})
	if err != nil {
		return nil, err
	}
	return map[string]any{"explanation": explanationDoc(req.Namespace, req.To, policies, x), "text": x.String()}, nil
}

// resourcesView is every applied resource as YAML, as get -o yaml prints
// it, by kind.
func resourcesView(ctx context.Context, c meshv1.AdminServiceClient, _ []byte) (any, error) {
	resp, err := c.GetResources(ctx, &meshv1.GetResourcesRequest{})
	if err != nil {
		return nil, err
	}
	byKind := map[string][]api.Object{}
	for _, r := range resp.GetResources() {
		o, err := api.FromProto(r)
		if err != nil {
			return nil, err
		}
		byKind[r.GetKind()] = append(byKind[r.GetKind()], o)
	}
	type kindDoc struct {
		Kind  string `json:"kind"`
		Count int    `json:"count"`
		YAML  string `json:"yaml"`
	}
	out := []kindDoc{}
	for kind, objs := range byKind {
		var b bytes.Buffer
		if err := api.Encode(&b, objs...); err != nil {
			return nil, err
		}
		out = append(out, kindDoc{Kind: kind, Count: len(objs), YAML: b.String()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return map[string]any{"revision": resp.GetRevision(), "kinds": out}, nil
}
