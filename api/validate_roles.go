package api

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"

	meshv1 "minimesh/proto/mesh/v1"
)

// Limits and defaults of the kinds for the sidecar's other roles
// (ExternalService, LogAdapter, LogShipping) and of ServiceMetrics.
const (
	MaxExternalHosts         = 16
	MaxAllowedServices       = 64
	MaxCABundleBytes         = 64 << 10
	MaxConnectTimeout        = time.Minute
	MaxIdleTimeout           = time.Hour
	DefaultConnectTimeout    = 5 * time.Second
	DefaultIdleTimeout       = 90 * time.Second
	MaxLogAdapterFiles       = 16
	MaxRecordBytes           = 1 << 20
	DefaultMaxRecordBytes    = 64 << 10
	MaxFlushAfter            = time.Minute
	DefaultFlushAfter        = time.Second
	MinBatchBytes            = 64 << 10
	MaxBatchBytes            = 64 << 20
	DefaultBatchBytes        = 5 << 20
	MinBatchAge              = time.Second
	MaxBatchAge              = time.Hour
	DefaultBatchAge          = time.Minute
	MaxSpoolBytes            = 64 << 30
	DefaultSpoolBytes        = 256 << 20
	MaxJSONMetrics           = 256
	DefaultMetricsPath       = "/metrics"
	DefaultLogShippingRegion = "us-east-1"
	// LogsDir is the directory of the shared directory that inject mounts
	// read-write in the app for its logs (an emptyDir of its own); ConfigFiles
	// and git sync may not write under it.
	LogsDir = "logs"
)

// logAdapterFields are the fields a LogAdapter may add to each record.
var logAdapterFields = []string{"service", "identity", "pod", "file"}

// LogAdapterFields returns the fields a LogAdapter may add, in their order.
func LogAdapterFields() []string { return slices.Clone(logAdapterFields) }

// Validate checks the ExternalService; see the comments in resources.proto.
func (o *ExternalService) Validate() error {
	c := newChecker(o)
	s := o.Spec
	if s == nil {
		s = &meshv1.ExternalServiceSpec{}
	}
	c.unknownFields("spec", s.ProtoReflect())
	c.count("spec.hosts", len(s.GetHosts()), 1, MaxExternalHosts)
	seen := map[string]int{}
	for i, h := range s.GetHosts() {
		f := idx("spec.hosts", i)
		if err := checkHost(h); err != nil {
			c.addf(f, "%v", err)
			continue
		}
		if j, dup := seen[h]; dup {
			c.addErr(f, ErrConflict, "%q duplicates spec.hosts[%d]", h, j)
		}
		seen[h] = i
	}
	if p := s.GetPort(); p < 1 || p > 65535 {
		c.addf("spec.port", "must be between 1 and 65535, got %d", p)
	}
	proto := s.GetProtocol()
	c.enum("spec.protocol", proto.Descriptor(), protoreflect.EnumNumber(proto))
	tls := proto == meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_TLS || proto == meshv1.ExternalProtocol_EXTERNAL_PROTOCOL_HTTPS
	onlyTLS := func(field string) {
		if !tls && proto != 0 {
			c.addf(field, "only for protocol tls or https, not %s", enumShortName(proto.Descriptor(), protoreflect.EnumNumber(proto)))
		}
	}
	if n := s.GetServerName(); n != "" {
		onlyTLS("spec.serverName")
		if err := checkHost(n); err != nil {
			c.addf("spec.serverName", "%v", err)
		}
	}
	if b := s.GetCaBundle(); b != "" {
		onlyTLS("spec.caBundle")
		if err := checkCABundle(b); err != nil {
			c.addf("spec.caBundle", "%v", err)
		}
	}
	if cc := s.GetClientCertificate(); cc != nil {
		onlyTLS("spec.clientCertificate")
		c.absPath("spec.clientCertificate.certFile", cc.GetCertFile())
		c.absPath("spec.clientCertificate.keyFile", cc.GetKeyFile())
	}
	c.duration("spec.connectTimeout", s.GetConnectTimeout(), MaxConnectTimeout)
	c.duration("spec.idleTimeout", s.GetIdleTimeout(), MaxIdleTimeout)
	c.count("spec.allowedServices", len(s.GetAllowedServices()), 0, MaxAllowedServices)
	names := map[string]int{}
	for i, n := range s.GetAllowedServices() {
		f := idx("spec.allowedServices", i)
		c.label(f, n, true)
		if j, dup := names[n]; dup {
			c.addErr(f, ErrConflict, "%q duplicates spec.allowedServices[%d]", n, j)
		}
		names[n] = i
	}
	return c.err()
}

// ExternalServerName is the name the proxy sends as SNI and verifies: the
// spec's serverName, else its first host.
func ExternalServerName(s *meshv1.ExternalServiceSpec) string {
	if n := s.GetServerName(); n != "" {
		return n
	}
	if h := s.GetHosts(); len(h) > 0 {
		return h[0]
	}
	return ""
}

// ExternalAllows reports whether the proxies of service get the external
// service: allowedServices names it, or is empty.
func ExternalAllows(s *meshv1.ExternalServiceSpec, service string) bool {
	a := s.GetAllowedServices()
	return len(a) == 0 || slices.Contains(a, service)
}

// checkHost accepts an IP address or a DNS name of lower-case labels.
func checkHost(h string) error {
	if h == "" {
		return errors.New("required")
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return fmt.Errorf("%q: an address with a zone is not allowed", h)
		}
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("%q is longer than 253 bytes", h)
	}
	for l := range strings.SplitSeq(h, ".") {
		if !IsLabel(l) {
			return fmt.Errorf("%q is neither an IP address nor a DNS name of lower-case labels (letters, digits and '-', at most %d each)", h, MaxNameLength)
		}
	}
	return nil
}

// checkCABundle accepts PEM holding only CERTIFICATE blocks that parse, at
// least one, at most MaxCABundleBytes.
func checkCABundle(b string) error {
	if len(b) > MaxCABundleBytes {
		return fmt.Errorf("%d bytes, at most %d", len(b), MaxCABundleBytes)
	}
	rest := []byte(b)
	n := 0
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		n++
		if blk.Type != "CERTIFICATE" {
			return fmt.Errorf("block %d is a %q, not a CERTIFICATE", n, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("certificate %d does not parse: %v", n, err)
		}
	}
	if n == 0 {
		return errors.New("holds no PEM certificate")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return fmt.Errorf("has %d bytes that are not PEM after certificate %d", len(strings.TrimSpace(string(rest))), n)
	}
	return nil
}

// absPath requires an absolute clean path in the proxy's container.
func (c *checker) absPath(field, p string) {
	switch {
	case p == "":
		c.addf(field, "required")
	case len(p) > MaxPathLength:
		c.addf(field, "longer than %d bytes", MaxPathLength)
	case !strings.HasPrefix(p, "/"):
		c.addf(field, "%q must be an absolute path", p)
	case hasControl(p) || strings.ContainsRune(p, '\t') || !utf8.ValidString(p):
		c.addf(field, "%q must be UTF-8 without control characters", p)
	case filepath.Clean(p) != p:
		c.addf(field, "%q is not clean (it would be %q)", p, filepath.Clean(p))
	}
}

// Validate checks the LogAdapter; see the comments in resources.proto.
func (o *LogAdapter) Validate() error {
	c := newChecker(o)
	s := o.Spec
	if s == nil {
		s = &meshv1.LogAdapterSpec{}
	}
	c.unknownFields("spec", s.ProtoReflect())
	c.label("spec.service", s.GetService(), true)
	c.count("spec.files", len(s.GetFiles()), 1, MaxLogAdapterFiles)
	seen := map[string]int{}
	for i, g := range s.GetFiles() {
		f := idx("spec.files", i)
		if err := checkRelativePath(g); err != nil {
			c.addf(f, "%v", err)
			continue
		}
		if _, err := path.Match(g, ""); err != nil {
			c.addf(f, "%q is not a valid glob: %v", g, err)
			continue
		}
		if j, dup := seen[g]; dup {
			c.addErr(f, ErrConflict, "%q duplicates spec.files[%d]", g, j)
		}
		seen[g] = i
	}
	if r := s.GetRecordStart(); r != "" {
		c.regex("spec.recordStart", r)
	}
	if n := s.GetMaxRecordBytes(); n > MaxRecordBytes {
		c.addf("spec.maxRecordBytes", "must be at most %d, got %d", MaxRecordBytes, n)
	}
	c.duration("spec.flushAfter", s.GetFlushAfter(), MaxFlushAfter)
	format := s.GetFormat()
	if format != 0 && format.Descriptor().Values().ByNumber(protoreflect.EnumNumber(format)) == nil {
		c.enum("spec.format", format.Descriptor(), protoreflect.EnumNumber(format))
	}
	switch p := s.GetPattern(); {
	case format == meshv1.LogFormat_LOG_FORMAT_REGEX && p == "":
		c.addf("spec.pattern", "required for format regex")
	case format != meshv1.LogFormat_LOG_FORMAT_REGEX && p != "":
		c.addf("spec.pattern", "only for format regex")
	case p != "":
		if re, err := compileRegex(p); err != nil {
			c.addf("spec.pattern", "invalid regex: %v", err)
		} else if !hasNamedGroup(re) {
			c.addf("spec.pattern", "has no named group, such as (?P<level>\\w+)")
		}
	}
	fields := map[string]int{}
	for i, name := range s.GetFields() {
		f := idx("spec.fields", i)
		if !slices.Contains(logAdapterFields, name) {
			c.addf(f, "unknown field %q; one of %s", name, strings.Join(logAdapterFields, ", "))
			continue
		}
		if j, dup := fields[name]; dup {
			c.addf(f, "%q duplicates spec.fields[%d]", name, j)
		}
		fields[name] = i
	}
	return c.err()
}

func hasNamedGroup(re *regexp.Regexp) bool {
	return slices.ContainsFunc(re.SubexpNames(), func(n string) bool { return n != "" })
}

// Validate checks the LogShipping; see the comments in resources.proto.
func (o *LogShipping) Validate() error {
	c := newChecker(o)
	s := o.Spec
	if s == nil {
		s = &meshv1.LogShippingSpec{}
	}
	c.unknownFields("spec", s.ProtoReflect())
	c.label("spec.service", s.GetService(), true)
	if err := checkEndpoint(s.GetEndpoint()); err != nil {
		c.addf("spec.endpoint", "%v", err)
	}
	if err := checkBucket(s.GetBucket()); err != nil {
		c.addf("spec.bucket", "%v", err)
	}
	if r := s.GetRegion(); len(r) > 64 || strings.IndexFunc(r, func(c rune) bool {
		return !(c < unicode.MaxASCII && (unicode.IsLetter(c) || unicode.IsDigit(c) || c == '-'))
	}) >= 0 {
		c.addf("spec.region", "%q must be at most 64 letters, digits and '-'", r)
	}
	c.absPath("spec.credentialsFile", s.GetCredentialsFile())
	batch := uint64(DefaultBatchBytes)
	if b := s.GetBatchBytes(); b != 0 {
		batch = uint64(b)
		if b < MinBatchBytes || b > MaxBatchBytes {
			c.addf("spec.batchBytes", "must be between %d and %d, got %d", MinBatchBytes, MaxBatchBytes, b)
		}
	}
	if d := c.duration("spec.batchAge", s.GetBatchAge(), MaxBatchAge); d != 0 && d < MinBatchAge {
		c.addf("spec.batchAge", "must be at least %s, got %s", MinBatchAge, d)
	}
	if sp := s.GetSpoolBytes(); sp != 0 && (sp < 4*batch || sp > MaxSpoolBytes) {
		c.addf("spec.spoolBytes", "must be between 4 times the batch size (%d) and %d, got %d", 4*batch, uint64(MaxSpoolBytes), sp)
	}
	if b := s.GetCaBundle(); b != "" {
		if err := checkCABundle(b); err != nil {
			c.addf("spec.caBundle", "%v", err)
		}
	}
	return c.err()
}

// checkEndpoint accepts https://host[:port], and http:// only to a loopback
// address, with no path, query, fragment or user info.
func checkEndpoint(e string) error {
	if e == "" {
		return errors.New("required")
	}
	u, err := url.Parse(e)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", e)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q must start with https://", e)
	case u.User != nil:
		return fmt.Errorf("%q must not carry user info (use credentialsFile)", e)
	case u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%q has no host", e)
	case u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("%q must have no path, query or fragment", e)
	}
	if err := checkHost(u.Hostname()); err != nil {
		return err
	}
	if u.Scheme == "http" {
		a, err := netip.ParseAddr(u.Hostname())
		if u.Hostname() != "localhost" && (err != nil || !a.IsLoopback()) {
			return fmt.Errorf("%q: plain http only to a loopback address; use https", e)
		}
	}
	return nil
}

// checkBucket applies S3's bucket naming rules.
func checkBucket(b string) error {
	switch {
	case b == "":
		return errors.New("required")
	case len(b) < 3 || len(b) > 63:
		return fmt.Errorf("%q must be 3 to 63 characters", b)
	case strings.Contains(b, ".."):
		return fmt.Errorf("%q must not contain \"..\"", b)
	}
	if _, err := netip.ParseAddr(b); err == nil {
		return fmt.Errorf("%q must not be an IP address", b)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return fmt.Errorf("%q may hold only lower-case letters, digits, '.' and '-'", b)
		}
	}
	if first, last := b[0], b[len(b)-1]; first == '.' || first == '-' || last == '.' || last == '-' {
		return fmt.Errorf("%q must start and end with a letter or digit", b)
	}
	return nil
}

var metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)

// validateMetrics checks a Service's spec.metrics.
func (c *checker) metrics(m *meshv1.ServiceMetrics) {
	if m == nil {
		return
	}
	if p := m.GetPort(); p < 1 || p > 65535 {
		c.addf("spec.metrics.port", "must be between 1 and 65535, got %d", p)
	}
	if p := m.GetPath(); p != "" {
		if err := checkMetricsPath(p); err != nil {
			c.addf("spec.metrics.path", "%v", err)
		}
	}
	format := m.GetFormat()
	if format != 0 && format.Descriptor().Values().ByNumber(protoreflect.EnumNumber(format)) == nil {
		c.enum("spec.metrics.format", format.Descriptor(), protoreflect.EnumNumber(format))
	}
	if format == meshv1.MetricsFormat_METRICS_FORMAT_JSON {
		c.count("spec.metrics.json", len(m.GetJson()), 1, MaxJSONMetrics)
	} else if len(m.GetJson()) > 0 {
		c.addf("spec.metrics.json", "only for format json")
	}
	names := map[string]int{}
	for i, j := range m.GetJson() {
		f := idx("spec.metrics.json", i)
		if err := checkJSONField(j.GetField()); err != nil {
			c.addf(f+".field", "%v", err)
		}
		switch n := j.GetName(); {
		case n == "":
			c.addf(f+".name", "required")
		case len(n) > 128 || !metricName.MatchString(n):
			c.addf(f+".name", "%q is not a Prometheus metric name of at most 128 bytes", n)
		default:
			if k, dup := names[n]; dup {
				c.addErr(f+".name", ErrConflict, "%q duplicates spec.metrics.json[%d]", n, k)
			}
			names[n] = i
		}
		c.enum(f+".type", j.GetType().Descriptor(), protoreflect.EnumNumber(j.GetType()))
		if h := j.GetHelp(); len(h) > 256 || !utf8.ValidString(h) || strings.IndexFunc(h, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			c.addf(f+".help", "must be at most 256 bytes of printable UTF-8")
		}
	}
}

// checkMetricsPath accepts an absolute URL path with an optional query.
func checkMetricsPath(p string) error {
	u, err := url.ParseRequestURI(p)
	switch {
	case len(p) > MaxPathLength:
		return fmt.Errorf("longer than %d bytes", MaxPathLength)
	case err != nil || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || u.Fragment != "" || hasControl(p) || strings.ContainsAny(p, " #"):
		return fmt.Errorf("%q must be an absolute path with an optional query", p)
	}
	return nil
}

// ParseAppMetricsFlag parses mesh-proxy's --app-metrics, "PORT" or
// "PORT/path" (the Prometheus format), as meshctl inject builds it from a
// pod's prometheus.io/port and prometheus.io/path annotations: the
// contract the two read alike. "" is nil: no app metrics.
func ParseAppMetricsFlag(s string) (*meshv1.ServiceMetrics, error) {
	if s == "" {
		return nil, nil
	}
	port, p, _ := strings.Cut(s, "/")
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("--app-metrics %q: want PORT or PORT/path, PORT 1 to 65535", s)
	}
	m := &meshv1.ServiceMetrics{Port: uint32(n)}
	if p != "" {
		m.Path = "/" + p
		if err := checkMetricsPath(m.Path); err != nil {
			return nil, fmt.Errorf("--app-metrics %q: the path %v", s, err)
		}
	}
	return m, nil
}

// checkJSONField accepts dot-separated keys of letters, digits, '_' and '-'.
func checkJSONField(f string) error {
	if f == "" {
		return errors.New("required")
	}
	keys := strings.Split(f, ".")
	if len(keys) > 8 {
		return fmt.Errorf("%q has %d keys, at most 8", f, len(keys))
	}
	for _, k := range keys {
		if k == "" || len(k) > 128 || strings.IndexFunc(k, func(r rune) bool {
			return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-'))
		}) >= 0 {
			return fmt.Errorf("%q: each key must be 1 to 128 letters, digits, '_' or '-'", f)
		}
	}
	return nil
}
