package meshctl

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/signal"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"minimesh/internal/termsafe"
	meshv1 "minimesh/proto/mesh/v1"
)

// Traffic stats (issue 26): stat, edges and denies read AdminService.Stats,
// which meshd answers from what the proxies reported over their streams in
// the window, merged across the replicas that answered.

func init() {
	examples["meshctl stat"] = `  # Per service: requests per second, success rate, latency percentiles, mTLS share:
  meshctl stat
  meshctl stat api --window 5m
  # Refresh in place every 2 s:
  meshctl stat -w
  meshctl stat api -o json`
	examples["meshctl edges"] = `  # Who calls whom, with the verified identities of both sides:
  meshctl edges
  meshctl edges api --window 15m -o wide
  meshctl edges -o jsonpath='{range .edges[*]}{.source}{" -> "}{.destination}{"\n"}{end}'`
	examples["meshctl denies"] = `  # The requests AuthorizationPolicies denied lately, newest first:
  meshctl denies
  meshctl denies api --window 15m -o yaml`
}

// statFlags are the flags stat, edges and denies share.
type statFlags struct {
	window time.Duration
	watch  bool
	every  time.Duration
}

func (f *statFlags) add(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&f.window, "window", time.Minute, "how far back: 10s to 15m (meshd keeps 15 minutes in 10 s samples)")
	cmd.Flags().BoolVarP(&f.watch, "watch", "w", false, "refresh every --interval (in place in a terminal) until interrupted")
	cmd.Flags().DurationVar(&f.every, "interval", 2*time.Second, "how often -w refreshes (at least 1s)")
}

// run queries meshd and prints with show, once or, with -w, until
// interrupted.
func (f *statFlags) run(g *globals, args []string, show func(*meshv1.StatsResponse) error) error {
	if f.window < 10*time.Second || f.window > 15*time.Minute {
		return fmt.Errorf("--window %s: must be 10s to 15m (meshd keeps 15 minutes in 10 s samples)", f.window)
	}
	req := &meshv1.StatsRequest{Window: durationpb.New(f.window)}
	if len(args) == 1 {
		req.Service, req.Namespace = splitService(args[0])
	}
	once := func() error {
		return g.admin(func(ctx context.Context, c meshv1.AdminServiceClient) error {
			resp, err := c.Stats(ctx, req)
			if err != nil {
				return err
			}
			return show(resp)
		})
	}
	if !f.watch {
		return once()
	}
	if f.every < time.Second {
		return fmt.Errorf("--interval %s: at least 1s", f.every)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tw, inPlace := g.io.Out.(*termsafe.Writer)
	inPlace = inPlace && isTerminal(os.Stdout)
	for first := true; ; first = false {
		if inPlace {
			_ = tw.ClearScreen()
		} else if !first {
			printf(g.io.Out, "\n")
		}
		if err := once(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(f.every):
		}
	}
}

// splitService reads SERVICE or SERVICE.NAMESPACE.
func splitService(s string) (name, ns string) {
	name, ns, _ = strings.Cut(s, ".")
	return name, ns
}

// traffic is the summed counts of some edges.
type traffic struct {
	classes [7]uint64
	buckets []uint64
	mtls    uint64
}

func (t *traffic) add(e *meshv1.EdgeStats) {
	var n uint64
	for i, v := range e.GetClasses() {
		if i < len(t.classes) {
			t.classes[i] += v
			n += v
		}
	}
	if len(t.buckets) < len(e.GetLatencyBuckets()) {
		t.buckets = append(t.buckets, make([]uint64, len(e.GetLatencyBuckets())-len(t.buckets))...)
	}
	for i, v := range e.GetLatencyBuckets() {
		t.buckets[i] += v
	}
	if e.GetMtls() {
		t.mtls += n
	}
}

func (t *traffic) total() (n uint64) {
	for _, v := range t.classes {
		n += v
	}
	return n
}

// success is the share of responses that are neither 5xx nor aborted.
func (t *traffic) success() float64 {
	n := t.total()
	if n == 0 {
		return 0
	}
	return float64(n-t.classes[4]-t.classes[5]) / float64(n)
}

// quantile is Prometheus' histogram_quantile over the buckets: linear
// within the bucket where the rank falls; in the +Inf bucket, the last
// bound.
func (t *traffic) quantile(q float64, bounds []float64) float64 {
	var n uint64
	for _, v := range t.buckets {
		n += v
	}
	if n == 0 || len(bounds) == 0 {
		return math.NaN()
	}
	rank := q * float64(n)
	var cum float64
	for i, v := range t.buckets {
		prev := cum
		cum += float64(v)
		if cum >= rank && v > 0 {
			if i >= len(bounds) {
				return bounds[len(bounds)-1]
			}
			lo := 0.0
			if i > 0 {
				lo = bounds[i-1]
			}
			return lo + (bounds[i]-lo)*(rank-prev)/float64(v)
		}
	}
	return bounds[len(bounds)-1]
}

// statRow is one line of stat or edges, as -o json prints it.
type statRow struct {
	Namespace            string   `json:"namespace"`
	Service              string   `json:"service,omitempty"`
	Source               string   `json:"source,omitempty"`
	SourceIdentities     []string `json:"sourceIdentities,omitempty"`
	Destination          string   `json:"destination,omitempty"`
	DestinationIdentites []string `json:"destinationIdentities,omitempty"`
	MTLS                 *bool    `json:"mtls,omitempty"`
	Requests             uint64   `json:"requests"`
	Failures             uint64   `json:"failures"`
	RPS                  float64  `json:"rps"`
	SuccessRate          float64  `json:"successRate"`
	P50                  *float64 `json:"p50Seconds,omitempty"`
	P95                  *float64 `json:"p95Seconds,omitempty"`
	P99                  *float64 `json:"p99Seconds,omitempty"`
	MTLSShare            *float64 `json:"mtlsShare,omitempty"`
	// Folded: edges meshd folded into this one (a source "other"; edges only).
	Folded    uint32   `json:"folded,omitempty"`
	Responses []uint64 `json:"responsesByClass"` // 1xx 2xx 3xx 4xx 5xx aborted other
}

// statDoc is what stat and edges print with -o json|yaml.
type statDoc struct {
	Window           string    `json:"window"`
	ReplicasAsked    uint32    `json:"replicasAsked"`
	ReplicasAnswered uint32    `json:"replicasAnswered"`
	ReplicaErrors    []string  `json:"replicaErrors,omitempty"`
	Services         []statRow `json:"services,omitempty"`
	Edges            []statRow `json:"edges,omitempty"`
	// EdgesFolded: edges meshd folded into "other" to keep its answer
	// under its size bound (StatsResponse.edges_folded).
	EdgesFolded uint32 `json:"edgesFolded,omitempty"`
}

func fill(r *statRow, t *traffic, window time.Duration, bounds []float64) {
	r.Requests = t.total()
	r.Failures = t.classes[4] + t.classes[5]
	r.RPS = float64(r.Requests) / window.Seconds()
	r.SuccessRate = t.success()
	r.Responses = t.classes[:]
	for _, q := range []struct {
		p *(*float64)
		q float64
	}{{&r.P50, .5}, {&r.P95, .95}, {&r.P99, .99}} {
		if v := t.quantile(q.q, bounds); !math.IsNaN(v) {
			*q.p = &v
		}
	}
}

func newStatCmd(g *globals) *cobra.Command {
	var f statFlags
	cmd := &cobra.Command{
		Use:   "stat [SERVICE[.NAMESPACE]]",
		Short: "Per service: requests per second, success rate, latency percentiles and mTLS share",
		Long: `Per service, the traffic its proxies served in the window (--window, default 1m):
requests per second, success rate (responses that are not 5xx or cut off),
p50/p95/p99 latency from the proxies' histograms, and the share of
requests that came over mTLS (the rest came to the public port). Proxies
report every 10 s over their stream; meshd keeps 15 minutes. With several
meshd replicas every replica that answers is counted, and the output says
how many answered.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return f.run(g, args, func(resp *meshv1.StatsResponse) error {
				w := resp.GetWindow().AsDuration()
				type key struct{ ns, svc string }
				by := map[key]*traffic{}
				var keys []key
				for _, e := range resp.GetEdges() {
					k := key{e.GetDestinationNamespace(), e.GetDestinationService()}
					if by[k] == nil {
						by[k] = &traffic{}
						keys = append(keys, k)
					}
					by[k].add(e)
				}
				sort.Slice(keys, func(i, j int) bool {
					return keys[i].ns < keys[j].ns || (keys[i].ns == keys[j].ns && keys[i].svc < keys[j].svc)
				})
				doc := statDoc{Window: w.String(), ReplicasAsked: resp.GetReplicasAsked(), ReplicasAnswered: resp.GetReplicasAnswered(), ReplicaErrors: resp.GetReplicaErrors(), Services: []statRow{}, EdgesFolded: resp.GetEdgesFolded()}
				for _, k := range keys {
					t := by[k]
					r := statRow{Namespace: k.ns, Service: k.svc}
					fill(&r, t, w, resp.GetLatencyBounds())
					share := float64(t.mtls) / float64(max(r.Requests, 1))
					r.MTLSShare = &share
					doc.Services = append(doc.Services, r)
				}
				return g.show(view{doc: doc, table: func(wide bool) error {
					h := "NAMESPACE\tSERVICE\tSUCCESS\tRPS\tLATENCY_P50\tLATENCY_P95\tLATENCY_P99\tMTLS"
					if wide {
						h += "\tREQUESTS\t5XX"
					}
					tw := g.newTable(h)
					for _, r := range doc.Services {
						cells := []string{r.Namespace, r.Service, pct(r.SuccessRate), fmt.Sprintf("%.1f", r.RPS), ms(r.P50), ms(r.P95), ms(r.P99), pct(*r.MTLSShare)}
						if wide {
							cells = append(cells, fmt.Sprint(r.Requests), fmt.Sprint(r.Responses[4]))
						}
						row(tw, cells...)
					}
					if err := tw.Flush(); err != nil {
						return err
					}
					g.replicaLine(resp)
					g.foldedLine(resp, false)
					return nil
				}})
			})
		},
	}
	f.add(cmd)
	return outputs(cmd, formatTable, formatWide, formatJSON, formatYAML, formatJSONPath)
}

func newEdgesCmd(g *globals) *cobra.Command {
	var f statFlags
	cmd := &cobra.Command{
		Use:   "edges [SERVICE[.NAMESPACE]]",
		Short: "Per caller and callee: the same numbers as stat, with the verified identities of both",
		Long: `Per caller → callee in the window: the caller as SERVICE-ACCOUNT.NAMESPACE
and its identities as the callee's proxy verified them (its mTLS client
certificate; "(outside the mesh)" for the public port), the callee's as
meshd verified them (the reporting proxy's stream), requests per second,
success rate and latency.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return f.run(g, args, func(resp *meshv1.StatsResponse) error {
				doc := edgesDoc(resp)
				return g.show(view{doc: doc, table: func(wide bool) error {
					h := "SRC\tDST\tSRC_IDENTITY\tDST_IDENTITY\tSECURED\tSUCCESS\tRPS\tLATENCY_P99"
					if wide {
						h += "\tREQUESTS\tLATENCY_P50\tLATENCY_P95"
					}
					tw := g.newTable(h)
					for _, r := range doc.Edges {
						secured := "√"
						if !*r.MTLS {
							secured = "-"
						}
						src := r.Source
						if r.Folded > 0 {
							src += fmt.Sprintf(" (%d edges)", r.Folded)
						}
						cells := []string{src, r.Destination, orDash(strings.Join(r.SourceIdentities, ",")), orDash(strings.Join(r.DestinationIdentites, ",")),
							secured, pct(r.SuccessRate), fmt.Sprintf("%.1f", r.RPS), ms(r.P99)}
						if wide {
							cells = append(cells, fmt.Sprint(r.Requests), ms(r.P50), ms(r.P95))
						}
						row(tw, cells...)
					}
					if err := tw.Flush(); err != nil {
						return err
					}
					g.replicaLine(resp)
					g.foldedLine(resp, false)
					return nil
				}})
			})
		},
	}
	f.add(cmd)
	return outputs(cmd, formatTable, formatWide, formatJSON, formatYAML, formatJSONPath)
}

// edgeSource is how edges names an edge's caller: its service account and
// namespace as "name.namespace" (as the destination is named), the name
// alone from a proxy that reports no namespace (older, or "other"), or
// "(outside the mesh)" for the public port's clients.
func edgeSource(e *meshv1.EdgeStats) string {
	switch {
	case !e.GetMtls():
		return "(outside the mesh)"
	case e.GetSourceNamespace() != "":
		return e.GetSourceService() + "." + e.GetSourceNamespace()
	}
	return e.GetSourceService()
}

// edgesDoc is edges' document: one row per edge in resp.
func edgesDoc(resp *meshv1.StatsResponse) statDoc {
	w := resp.GetWindow().AsDuration()
	doc := statDoc{Window: w.String(), ReplicasAsked: resp.GetReplicasAsked(), ReplicasAnswered: resp.GetReplicasAnswered(), ReplicaErrors: resp.GetReplicaErrors(), Edges: []statRow{}, EdgesFolded: resp.GetEdgesFolded()}
	for _, e := range resp.GetEdges() {
		t := &traffic{}
		t.add(e)
		mtls := e.GetMtls()
		r := statRow{Namespace: e.GetDestinationNamespace(), Source: edgeSource(e), SourceIdentities: e.GetSourceIdentities(),
			Destination: e.GetDestinationService() + "." + e.GetDestinationNamespace(), DestinationIdentites: e.GetDestinationIdentities(), MTLS: &mtls,
			Folded: e.GetFolded()}
		fill(&r, t, w, resp.GetLatencyBounds())
		doc.Edges = append(doc.Edges, r)
	}
	return doc
}

// denyRow is one deny as -o json prints it.
type denyRow struct {
	Time        time.Time `json:"time"`
	Source      string    `json:"sourceIdentity"`
	Namespace   string    `json:"namespace"`
	Destination string    `json:"destination"`
	Instance    string    `json:"instanceId"`
	Method      string    `json:"method"`
	Path        string    `json:"path"`
	Policy      string    `json:"policy"`
	Rule        int32     `json:"rule"`
}

type denyDoc struct {
	Window           string    `json:"window"`
	ReplicasAsked    uint32    `json:"replicasAsked"`
	ReplicasAnswered uint32    `json:"replicasAnswered"`
	ReplicaErrors    []string  `json:"replicaErrors,omitempty"`
	Denies           []denyRow `json:"denies"`
	// DeniesLeftOut: older denies meshd left out to keep its answer under
	// its size bound (StatsResponse.denies_left_out).
	DeniesLeftOut uint32 `json:"deniesLeftOut,omitempty"`
}

func newDeniesCmd(g *globals) *cobra.Command {
	var f statFlags
	cmd := &cobra.Command{
		Use:   "denies [SERVICE[.NAMESPACE]]",
		Short: "The requests AuthorizationPolicies denied in the window, newest first",
		Long: `The requests an AuthorizationPolicy denied at a proxy's inbound or public
port in the window, newest first: the caller's verified identity, method,
normalized path (no query, at most 256 bytes), and the policy and rule
that denied ("-" and -1: the default deny). Each proxy reports at most 20
per 10 s; meshd keeps the last 1000.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return f.run(g, args, func(resp *meshv1.StatsResponse) error {
				doc := denyDoc{Window: resp.GetWindow().AsDuration().String(), ReplicasAsked: resp.GetReplicasAsked(), ReplicasAnswered: resp.GetReplicasAnswered(),
					ReplicaErrors: resp.GetReplicaErrors(), Denies: []denyRow{}, DeniesLeftOut: resp.GetDeniesLeftOut()}
				for _, d := range resp.GetDenies() {
					doc.Denies = append(doc.Denies, denyRow{Time: d.GetTime().AsTime(), Source: d.GetSourceIdentity(), Namespace: d.GetDestinationNamespace(),
						Destination: d.GetDestinationService(), Instance: d.GetInstanceId(), Method: d.GetMethod(), Path: d.GetPath(), Policy: d.GetPolicy(), Rule: d.GetRule()})
				}
				return g.show(view{doc: doc, table: func(wide bool) error {
					h := "TIME\tSOURCE\tDESTINATION\tMETHOD\tPATH\tPOLICY\tRULE"
					if wide {
						h += "\tINSTANCE"
					}
					tw := g.newTable(h)
					for _, d := range doc.Denies {
						src := d.Source
						if src == "" {
							src = "(outside the mesh)"
						}
						cells := []string{d.Time.Local().Format(time.TimeOnly), src, d.Destination + "." + d.Namespace, d.Method, d.Path, orDash(d.Policy), fmt.Sprint(d.Rule)}
						if wide {
							cells = append(cells, d.Instance)
						}
						row(tw, cells...)
					}
					if err := tw.Flush(); err != nil {
						return err
					}
					g.replicaLine(resp)
					g.foldedLine(resp, true)
					return nil
				}})
			})
		},
	}
	f.add(cmd)
	return outputs(cmd, formatTable, formatWide, formatJSON, formatYAML, formatJSONPath)
}

// replicaLine says, under a table, how many replicas answered when there
// are several or one did not.
func (g *globals) replicaLine(resp *meshv1.StatsResponse) {
	if resp.GetReplicasAsked() <= 1 && resp.GetReplicasAnswered() == resp.GetReplicasAsked() {
		return
	}
	printf(g.io.Out, "\n%d of %d meshd replicas answered\n", resp.GetReplicasAnswered(), resp.GetReplicasAsked())
	for _, e := range resp.GetReplicaErrors() {
		printf(g.io.Out, "  %s\n", e)
	}
}

// foldedLine says, under a table, what meshd folded or left out to keep
// its answer under its size bound, so that a short table is never taken
// for the whole mesh.
func (g *globals) foldedLine(resp *meshv1.StatsResponse, denies bool) {
	if n := resp.GetEdgesFolded(); n > 0 && !denies {
		printf(g.io.Out, "\n%d edges folded into \"other\" to keep meshd's answer under its size bound: their requests are counted, their callers are not named (name a service to see them)\n", n)
	}
	if n := resp.GetDeniesLeftOut(); n > 0 && denies {
		printf(g.io.Out, "\n%d older denies left out to keep meshd's answer under its size bound (name a service to see them)\n", n)
	}
}

func pct(v float64) string { return fmt.Sprintf("%.2f%%", 100*v) }

func ms(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%gms", math.Round(*v*1e4)/10)
}
