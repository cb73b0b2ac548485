package appmetrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"

	"minimesh/api"
	meshv1 "minimesh/proto/mesh/v1"
)

// Bounds of one scrape of the app.
const (
	DefaultTimeout   = 5 * time.Second
	DefaultMaxBytes  = 10 << 20
	DefaultMaxSeries = 10000
)

// Label is the label every app series gets (Label="app"); an app's own
// label of that name is kept as "exported_source".
const (
	Label      = "source"
	LabelValue = "app"
	// Prefix renames an app family whose name is one of the proxy's.
	Prefix = "app_"
)

// Reasons of minimesh_proxy_app_metrics_scrape_errors_total.
const (
	ReasonConnect   = "connect"
	ReasonTimeout   = "timeout"
	ReasonStatus    = "status"
	ReasonTooLarge  = "too_large"
	ReasonParse     = "parse"
	ReasonTooMany   = "too_many_series"
	ReasonCollision = "collision"
	ReasonJSONField = "json_field"
)

var reasons = []string{ReasonConnect, ReasonTimeout, ReasonStatus, ReasonTooLarge, ReasonParse, ReasonTooMany, ReasonCollision, ReasonJSONField}

// Target is where the app serves its metrics, on loopback in its pod.
type Target struct {
	Port   uint32
	Path   string // default "/metrics"
	Format meshv1.MetricsFormat
	JSON   []*meshv1.JSONMetric
}

// FromService is the Target of a Service's spec.metrics (nil without).
func FromService(m *meshv1.ServiceMetrics) *Target {
	if m == nil {
		return nil
	}
	t := &Target{Port: m.GetPort(), Path: m.GetPath(), Format: m.GetFormat()}
	for _, j := range m.GetJson() {
		t.JSON = append(t.JSON, proto.Clone(j).(*meshv1.JSONMetric))
	}
	return t
}

// ParseFlag parses mesh-proxy's --app-metrics: "PORT" or "PORT/path"
// (Prometheus format), as inject builds it from the pod's prometheus.io/port
// and prometheus.io/path annotations (api.ParseAppMetricsFlag, the contract
// inject and the proxy share).
func ParseFlag(s string) (*Target, error) {
	m, err := api.ParseAppMetricsFlag(s)
	if err != nil || m == nil {
		return nil, err
	}
	return FromService(m), nil
}

func (t *Target) url(host string) string {
	p := t.Path
	if p == "" {
		p = api.DefaultMetricsPath
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(int(t.Port))) + p
}

// Config configures a Merger.
type Config struct {
	// Ours is the proxy's own registry: its families are served as they
	// are, and the app's never collide with them. Required.
	Ours prometheus.Gatherer
	// Host is the app's loopback address (default 127.0.0.1).
	Host string
	// Timeout, MaxBytes (of the body, after decompression) and
	// MaxSeries bound one scrape (defaults 5s, 10 MiB, 10,000).
	Timeout   time.Duration
	MaxBytes  int64
	MaxSeries int
	Logger    *slog.Logger
}

// Merger is a prometheus.Gatherer: the proxy's families, its own
// minimesh_proxy_app_metrics_* and, when a Target is set, the app's,
// fetched at each Gather (concurrent Gathers share one fetch).
type Merger struct {
	cfg    Config
	target atomic.Pointer[Target]
	client *http.Client
	sf     singleflight.Group
	self   *prometheus.Registry
	up     prometheus.Gauge
	errs   *prometheus.CounterVec
	dur    prometheus.Gauge
	series prometheus.Gauge
}

var _ prometheus.Gatherer = (*Merger)(nil)

// New builds a Merger.
func New(cfg Config) (*Merger, error) {
	if cfg.Ours == nil {
		return nil, errors.New("appmetrics: Ours is required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Merger{cfg: cfg, self: prometheus.NewRegistry(),
		client: &http.Client{
			Timeout: cfg.Timeout,
			Transport: &http.Transport{Proxy: nil, MaxIdleConns: 1, IdleConnTimeout: 30 * time.Second,
				DialContext: (&net.Dialer{Timeout: cfg.Timeout}).DialContext, ResponseHeaderTimeout: cfg.Timeout},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "minimesh_proxy_app_metrics_up",
			Help: "1 if the last fetch of the app's metrics endpoint succeeded, else 0."}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minimesh_proxy_app_metrics_scrape_errors_total",
			Help: "Failed or partial fetches of the app's metrics, by reason: connect, timeout, status, too_large, parse, too_many_series, collision (a family dropped), json_field (a mapped field missing or not a number)."}, []string{"reason"}),
		dur: prometheus.NewGauge(prometheus.GaugeOpts{Name: "minimesh_proxy_app_metrics_scrape_duration_seconds",
			Help: "How long the last fetch of the app's metrics took."}),
		series: prometheus.NewGauge(prometheus.GaugeOpts{Name: "minimesh_proxy_app_metrics_series",
			Help: "Series the app's metrics endpoint served at the last fetch."}),
	}
	for _, r := range reasons {
		m.errs.WithLabelValues(r)
	}
	m.self.MustRegister(m.up, m.errs, m.dur, m.series)
	return m, nil
}

// Set sets the app's endpoint; nil stops merging.
func (m *Merger) Set(t *Target) { m.target.Store(t) }

// Target is the endpoint set, or nil.
func (m *Merger) Target() *Target { return m.target.Load() }

// Gather implements prometheus.Gatherer. The app's endpoint failing in
// any way is never an error here: it shows in up and scrape_errors_total
// while the proxy's own families are served.
func (m *Merger) Gather() ([]*dto.MetricFamily, error) {
	t := m.target.Load()
	var app []*dto.MetricFamily
	if t != nil {
		v, _, _ := m.sf.Do("scrape", func() (any, error) { return m.scrape(t), nil })
		app = v.([]*dto.MetricFamily)
	}
	ours, err := m.cfg.Ours.Gather()
	if t == nil {
		return ours, err
	}
	self, _ := m.self.Gather()
	taken := map[string]bool{}
	for _, f := range append(slices.Clone(ours), self...) {
		for _, n := range exposed(f.GetName(), f.GetType()) {
			taken[n] = true
		}
	}
	out := append(ours, self...)
	for _, f := range app {
		name := f.GetName()
		if collides(taken, name, f.GetType()) {
			name = Prefix + name
		}
		if collides(taken, name, f.GetType()) {
			m.errs.WithLabelValues(ReasonCollision).Inc()
			continue
		}
		for _, n := range exposed(name, f.GetType()) {
			taken[n] = true
		}
		if name != f.GetName() {
			// The fetched families are shared by concurrent Gathers:
			// a renamed one is a copy.
			f = &dto.MetricFamily{Name: proto.String(name), Help: f.Help, Type: f.Type, Unit: f.Unit, Metric: f.Metric}
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, err
}

// exposed are the series names a family shows in the text format.
func exposed(name string, t dto.MetricType) []string {
	switch t {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return []string{name, name + "_bucket", name + "_sum", name + "_count"}
	case dto.MetricType_SUMMARY:
		return []string{name, name + "_sum", name + "_count"}
	case dto.MetricType_COUNTER:
		return []string{name, name + "_total"}
	}
	return []string{name}
}

func collides(taken map[string]bool, name string, t dto.MetricType) bool {
	for _, n := range exposed(name, t) {
		if taken[n] {
			return true
		}
	}
	return false
}

// scrape fetches and parses the app's metrics, every series labelled;
// nil on any failure (counted).
func (m *Merger) scrape(t *Target) []*dto.MetricFamily {
	start := time.Now()
	fams, reason, err := m.fetch(t)
	m.dur.Set(time.Since(start).Seconds())
	if reason != "" {
		m.errs.WithLabelValues(reason).Inc()
		m.up.Set(0)
		m.series.Set(0)
		m.cfg.Logger.Debug("app metrics: fetch failed", "reason", reason, "err", err)
		return nil
	}
	m.up.Set(1)
	n := 0
	for _, f := range fams {
		n += len(f.GetMetric())
	}
	m.series.Set(float64(n))
	return fams
}

func (m *Merger) fetch(t *Target) ([]*dto.MetricFamily, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url(m.cfg.Host), nil)
	if err != nil {
		return nil, ReasonConnect, err
	}
	if t.Format == meshv1.MetricsFormat_METRICS_FORMAT_JSON {
		req.Header.Set("Accept", "application/json")
	} else {
		req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	}
	resp, err := m.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return nil, ReasonTimeout, err
		}
		return nil, ReasonConnect, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, ReasonStatus, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, m.cfg.MaxBytes+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			return nil, ReasonTimeout, err
		}
		return nil, ReasonConnect, err
	}
	if int64(len(body)) > m.cfg.MaxBytes {
		return nil, ReasonTooLarge, fmt.Errorf("body over %d bytes", m.cfg.MaxBytes)
	}
	if t.Format == meshv1.MetricsFormat_METRICS_FORMAT_JSON {
		return m.fromJSON(t, body)
	}
	// Counted before parsing whole: a sample is a line.
	if lines := bytes.Count(body, []byte("\n")); lines > 4*m.cfg.MaxSeries+1000 {
		return nil, ReasonTooMany, fmt.Errorf("%d lines", lines)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	parsed, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, ReasonParse, err
	}
	series := 0
	fams := make([]*dto.MetricFamily, 0, len(parsed))
	for _, f := range parsed {
		label(f)
		for _, mt := range f.GetMetric() {
			series++
			if h := mt.GetHistogram(); h != nil {
				series += len(h.GetBucket()) + 1
			}
			if s := mt.GetSummary(); s != nil {
				series += len(s.GetQuantile()) + 1
			}
		}
		fams = append(fams, f)
	}
	if series > m.cfg.MaxSeries {
		return nil, ReasonTooMany, fmt.Errorf("%d series", series)
	}
	return fams, "", nil
}

// label adds source="app" to every series of f (the app's own "source"
// label is kept as "exported_source") and drops repeated series.
func label(f *dto.MetricFamily) {
	seen := map[string]bool{}
	kept := f.Metric[:0]
	for _, mt := range f.Metric {
		var ls []*dto.LabelPair
		for _, l := range mt.Label {
			switch l.GetName() {
			case Label:
				l.Name = proto.String("exported_" + Label)
			case "exported_" + Label:
				continue
			}
			ls = append(ls, l)
		}
		ls = append(ls, &dto.LabelPair{Name: proto.String(Label), Value: proto.String(LabelValue)})
		slices.SortFunc(ls, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
		var key strings.Builder
		for _, l := range ls {
			key.WriteString(l.GetName())
			key.WriteByte(0)
			key.WriteString(l.GetValue())
			key.WriteByte(0)
		}
		if seen[key.String()] {
			continue
		}
		seen[key.String()] = true
		mt.Label = ls
		kept = append(kept, mt)
	}
	f.Metric = kept
}

// fromJSON turns the mapped fields of one JSON object into app_<name>
// gauges and counters.
func (m *Merger) fromJSON(t *Target, body []byte) ([]*dto.MetricFamily, string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, ReasonParse, err
	}
	var fams []*dto.MetricFamily
	for _, j := range t.JSON {
		v, ok := lookup(doc, j.GetField())
		if !ok {
			m.errs.WithLabelValues(ReasonJSONField).Inc()
			continue
		}
		help := j.GetHelp()
		if help == "" {
			help = "The app's JSON field " + j.GetField() + "."
		}
		mt := &dto.Metric{Label: []*dto.LabelPair{{Name: proto.String(Label), Value: proto.String(LabelValue)}}}
		f := &dto.MetricFamily{Name: proto.String(Prefix + j.GetName()), Help: proto.String(help)}
		if j.GetType() == meshv1.MetricType_METRIC_TYPE_COUNTER {
			f.Type = dto.MetricType_COUNTER.Enum()
			mt.Counter = &dto.Counter{Value: proto.Float64(v)}
		} else {
			f.Type = dto.MetricType_GAUGE.Enum()
			mt.Gauge = &dto.Gauge{Value: proto.Float64(v)}
		}
		f.Metric = []*dto.Metric{mt}
		fams = append(fams, f)
	}
	return fams, "", nil
}

// lookup walks dot-separated keys to a number.
func lookup(doc map[string]any, field string) (float64, bool) {
	var cur any = doc
	for _, k := range strings.Split(field, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return 0, false
		}
		if cur, ok = obj[k]; !ok {
			return 0, false
		}
	}
	n, ok := cur.(json.Number)
	if !ok {
		if b, isBool := cur.(bool); isBool {
			if b {
				return 1, true
			}
			return 0, true
		}
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

func isTimeout(err error) bool {
	var ne net.Error
	var ue *url.Error
	if errors.As(err, &ue) && ue.Timeout() {
		return true
	}
	return errors.As(err, &ne) && ne.Timeout()
}
